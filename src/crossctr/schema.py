"""Dataset schema: what a user's click log looks like, loaded from YAML and validated once.

A dataset YAML names the files, the label column, the domain column with its allowed
values, every feature column with its kind and feature group, and how to split rows into
train / validation / test. Schema objects own no parameters; encoders and models are built
from them.

Example:
    >>> schema = DatasetSchema.model_validate({
    ...     "name": "toy", "path": "toy.csv", "label": "click",
    ...     "domain": {"column": "site", "values": ["A", "B"]},
    ...     "features": [{"name": "brand", "kind": "categorical", "group": "brand"}],
    ...     "split": {"kind": "random", "seed": 0}})
    >>> schema.domain.values
    ('A', 'B')
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ConfigError",
    "FeatureKind",
    "FeatureSpec",
    "DomainSpec",
    "RandomSplit",
    "TimeSplit",
    "ColumnSplit",
    "DatasetSchema",
    "StrictModel",
    "load_yaml_model",
]


class ConfigError(ValueError):
    """A configuration or schema file is invalid; the message says which key and how to fix it."""


class StrictModel(BaseModel):
    """Frozen pydantic model that rejects unknown keys, so a misspelt key is never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureKind(str, enum.Enum):
    CATEGORICAL = "categorical"
    NUMERIC = "numeric"


class FeatureSpec(StrictModel):
    name: str = Field(min_length=1)
    kind: FeatureKind
    # Feature group (paper Figure 4: item statistics, query-item statistics, price, brand,
    # personal); attention weights are averaged per group in reports.
    group: str = "other"
    # Categorical: values seen fewer times than this in train map to the OOV id.
    min_count: int = Field(default=1, ge=1)
    # Numeric: number of quantile buckets fitted on train (paper: "feature discretization").
    buckets: int = Field(default=10, ge=2, le=1000)


class DomainSpec(StrictModel):
    column: str
    # Allowed domain names, in the order that fixes domain ids 0..N-1.
    values: tuple[str, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique(self) -> "DomainSpec":
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"domain.values must be unique, got {list(self.values)}")
        return self


class RandomSplit(StrictModel):
    kind: Literal["random"] = "random"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    @model_validator(mode="after")
    def _sum_to_one(self) -> "RandomSplit":
        if abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) <= 0:
            raise ValueError(f"split.fractions must be three positive numbers summing to 1, got {self.fractions}")
        return self


class TimeSplit(StrictModel):
    """Rows with `column` < valid_start train, < test_start validate, the rest test."""

    kind: Literal["time"] = "time"
    column: str
    valid_start: float
    test_start: float

    @model_validator(mode="after")
    def _ordered(self) -> "TimeSplit":
        if not self.valid_start < self.test_start:
            raise ValueError(f"split.valid_start ({self.valid_start}) must be below split.test_start ({self.test_start})")
        return self


class ColumnSplit(StrictModel):
    """The table already says which split each row belongs to (values train / valid / test)."""

    kind: Literal["column"] = "column"
    column: str = "split"


Split = Annotated[Union[RandomSplit, TimeSplit, ColumnSplit], Field(discriminator="kind")]


class DatasetSchema(StrictModel):
    name: str
    # A CSV or Parquet file, relative to the YAML file's folder unless absolute.
    path: str
    label: str
    domain: DomainSpec
    features: tuple[FeatureSpec, ...] = Field(min_length=1)
    split: Split = Field(default_factory=RandomSplit)

    @model_validator(mode="after")
    def _distinct_columns(self) -> "DatasetSchema":
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {dupes}")
        reserved = {self.label, self.domain.column}
        clash = sorted(reserved & set(names))
        if clash:
            raise ValueError(f"columns {clash} are the label or domain column and cannot also be features")
        return self

    @property
    def n_domains(self) -> int:
        return len(self.domain.values)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def groups(self) -> list[str]:
        """Feature groups in order of first appearance."""
        return list(dict.fromkeys(f.group for f in self.features))

    def required_columns(self) -> list[str]:
        cols = [self.label, self.domain.column, *self.feature_names]
        if isinstance(self.split, (TimeSplit, ColumnSplit)) and self.split.column not in cols:
            cols.append(self.split.column)
        return cols

    def resolve_path(self, base: Path) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else (base / p)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "DatasetSchema":
        return load_yaml_model(cls, path)


M = TypeVar("M", bound=BaseModel)


def _format_errors(model: type[BaseModel], err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid {model.__name__}"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, e["loc"][:-1])
            msg = f"unknown key; allowed keys here: {', '.join(allowed)}" if allowed else "unknown key"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Best-effort list of field names at `loc` so an unknown-key error can say what exists."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def validate_model(model: type[M], data: Any, source: str) -> M:
    """Validate `data` into `model`, turning pydantic's error into a ConfigError naming `source`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(model, err, source)) from None


def load_yaml_model(model: type[M], path: str | Path) -> M:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return validate_model(model, data, str(path))
