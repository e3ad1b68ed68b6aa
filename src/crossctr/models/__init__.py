"""Model registry: importing this package registers every model."""

from crossctr.models.base import REGISTRY, ModelOutput, build_model, parse_model_config
from crossctr.models.cnan import CNAN, CNANConfig
from crossctr.models.tower import TowerConfig, TowerModel

__all__ = ["REGISTRY", "ModelOutput", "build_model", "parse_model_config", "CNAN", "CNANConfig", "TowerModel", "TowerConfig"]
