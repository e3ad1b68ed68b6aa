"""Model registry: importing this package registers every model.

`TowerModel` / `TowerConfig`: the former names of `SingleNetwork` / `SingleNetworkConfig`, kept for
code that imports them.
"""

from crossctr.models.adasparse import AdaSparse, AdaSparseConfig
from crossctr.models.base import REGISTRY, ModelConfig, ModelOutput, build_model, parse_model_config
from crossctr.models.cnan import CNAN, CNANConfig, CNANPlusConfig
from crossctr.models.epnet import EPNet, EPNetConfig
from crossctr.models.m3oe import M3oE, M3oEConfig
from crossctr.models.mmoe import MMoE, MMoEConfig
from crossctr.models.ple import PLE, PLEConfig
from crossctr.models.shared_bottom import SharedBottom, SharedBottomConfig
from crossctr.models.single import SingleNetwork, SingleNetworkConfig
from crossctr.models.star import STAR, STARConfig

TowerModel, TowerConfig = SingleNetwork, SingleNetworkConfig  # former names

__all__ = [
    "REGISTRY",
    "ModelConfig",
    "ModelOutput",
    "build_model",
    "parse_model_config",
    "AdaSparse",
    "AdaSparseConfig",
    "CNAN",
    "CNANConfig",
    "CNANPlusConfig",
    "EPNet",
    "EPNetConfig",
    "M3oE",
    "M3oEConfig",
    "MMoE",
    "MMoEConfig",
    "PLE",
    "PLEConfig",
    "SharedBottom",
    "SharedBottomConfig",
    "STAR",
    "STARConfig",
    "SingleNetwork",
    "SingleNetworkConfig",
    "TowerModel",
    "TowerConfig",
]
