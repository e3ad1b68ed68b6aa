"""The model contract and the registry.

A model takes a `Batch` and returns `ModelOutput(logits, aux_losses, extras, task_logits)`:
one click logit per row, its own named auxiliary loss terms (adversarial, domain
discrimination, ...), anything a report may want (attention weights) and, for a multi-task
model, one logit per extra label. The trainer weighs and adds the losses and knows nothing
else of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from pydantic import PlainSerializer, PlainValidator
from pydantic_core import PydanticCustomError
from torch import nn

from crossctr.schema import ConfigError, StrictModel, validate_model

__all__ = [
    "ModelOutput",
    "ModelSpec",
    "register",
    "REGISTRY",
    "FORMER_NAMES",
    "accept_former_names",
    "build_model",
    "parse_model_config",
    "ModelConfig",
]


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B,) pre-sigmoid click scores
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> scalar
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B, ...) per-row values
    # Multi-task models: (B, T) logits of the dataset's extra labels (schema `tasks`), in order.
    task_logits: torch.Tensor | None = None


@dataclass(frozen=True)
class ModelSpec:
    config: type[StrictModel]
    build: Callable[[Any, Sequence[int], int], nn.Module]  # (config, cardinalities, n_domains)


REGISTRY: dict[str, ModelSpec] = {}
FORMER_NAMES: dict[str, str] = {}  # a model's former registered name -> its name now (still read)


def register(
    name: str, config: type[StrictModel], former_names: Sequence[str] = ()
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in REGISTRY or name in FORMER_NAMES:
            raise ValueError(f"model name {name!r} registered twice")
        REGISTRY[name] = ModelSpec(config, cls)
        FORMER_NAMES.update(dict.fromkeys(former_names, name))
        return cls

    return wrap


def accept_former_names(module: nn.Module, renamed: Mapping[str, str]) -> None:
    """Weights saved before a submodule was renamed still load: `renamed` maps former -> current attribute."""

    def hook(_module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
        for key in list(state_dict):
            for old, new in renamed.items():
                if key.startswith(f"{prefix}{old}."):
                    state_dict[f"{prefix}{new}.{key[len(prefix) + len(old) + 1 :]}"] = state_dict.pop(key)

    module.register_load_state_dict_pre_hook(hook)


def parse_model_config(data: dict[str, Any] | StrictModel, source: str = "model") -> StrictModel:
    """`{"name": "cnan", ...}` -> that model's frozen config; unknown names and keys are errors.

    A config already parsed (a registered model's config object) is returned as it is.
    """
    if isinstance(data, StrictModel):
        spec = REGISTRY.get(getattr(data, "name", ""))
        if spec is not None and type(data) is spec.config:
            return data
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{source}: needs a 'name' key; registered models: {sorted(REGISTRY)}")
    name = FORMER_NAMES.get(data["name"], data["name"])
    data = {**data, "name": name}
    if name not in REGISTRY:
        raise ConfigError(f"{source}: unknown model {name!r}; registered models: {sorted(REGISTRY)}")
    return validate_model(REGISTRY[name].config, data, source)


def build_model(config: StrictModel, cardinalities: Sequence[int], n_domains: int) -> nn.Module:
    spec = REGISTRY.get(getattr(config, "name", ""))  # every registered config has a name field
    if spec is None:
        raise ConfigError(f"{type(config).__name__} is no registered model's config; registered: {sorted(REGISTRY)}")
    return spec.build(config, cardinalities, n_domains)


def _validate_model_config(value: Any) -> StrictModel:
    try:
        return parse_model_config(value)
    except ConfigError as err:  # reported by pydantic under the field's own name
        raise PydanticCustomError("model_config", "{error}", {"error": str(err).removeprefix("model: ")}) from None


# A typed `model` field: `{"name": ..., other keys}` is parsed by the model's name into its
# registered config (unknown names and keys are errors); written back as the keys that were
# given (exclude_unset), so a run's config.json and fingerprints keep the form they had.
# `by_alias=True` (fingerprints, checkpoints) writes a renamed setting under its former key.
ModelConfig = Annotated[
    StrictModel,
    PlainValidator(_validate_model_config),
    PlainSerializer(
        lambda c, info: c.model_dump(mode="json", exclude_unset=True, by_alias=bool(info.by_alias)), return_type=dict
    ),
]
