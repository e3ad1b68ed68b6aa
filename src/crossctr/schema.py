"""Dataset schema: what a user's click log looks like, loaded from YAML and validated once.

A dataset YAML names the files (one CSV / Parquet file, a folder of shards or a glob), the
label column, the domain column with its allowed values, every feature column with its kind
and feature group, and how to split rows into train / validation / test. Schema objects own no parameters; encoders and models are built
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
import math
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
    CATEGORICAL = "categorical"  # a vocabulary fitted on train
    NUMERIC = "numeric"  # bucketised: quantiles fitted on train, or fixed `boundaries`
    HASHED = "hashed"  # value -> one of `buckets` ids by a stable hash: no vocabulary to fit or store
    CROSSED = "crossed"  # hash of the values of several `columns` (numeric features enter as bucket ids)
    MULTI = "multi"  # several values in one cell ("Action|Comedy"): up to `max_len` slots, mean-pooled


# Keys that only one feature kind reads; an unknown-key error lists them apart (see _allowed_keys).
_KIND_KEYS = {"boundaries": "numeric", "columns": "crossed", "separator": "multi", "max_len": "multi"}
_MAX_HASH_BUCKETS = 1 << 26  # 64M ids: past this a shared table of 64-dim embeddings alone is 16 GiB


class FeatureSpec(StrictModel):
    """One model feature.

    Example:
        >>> FeatureSpec(name="genres", kind="multi", separator="|", max_len=3).max_len
        3
        >>> FeatureSpec(name="brand_x_price", kind="crossed", columns=["brand", "price"], buckets=1024).columns
        ('brand', 'price')
    """

    name: str = Field(min_length=1)
    kind: FeatureKind
    # Feature group (paper Figure 4: item statistics, query-item statistics, price, brand,
    # personal); attention weights are averaged per group in reports.
    group: str = "other"
    # Categorical and multi: values seen fewer times than this in train map to the OOV id.
    min_count: int = Field(default=1, ge=1)
    # Numeric: number of quantile buckets fitted on train (paper: "feature discretization"),
    # at most 1000. Hashed and crossed: number of hash buckets (default 2^16).
    buckets: int = Field(default=10, ge=2, le=_MAX_HASH_BUCKETS)
    # Numeric: fixed, strictly increasing bucket boundaries instead of fitted quantiles.
    boundaries: tuple[float, ...] | None = None
    # Crossed: the columns whose values are crossed (two or more; any column of the file).
    columns: tuple[str, ...] | None = None
    # Multi: what separates the values in one cell, and how many values are kept (the first
    # max_len; the rest are dropped and counted by `crossctr inspect`).
    separator: str | None = None
    max_len: int | None = Field(default=None, ge=1, le=256)

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        """Fill the defaults that depend on the kind, so a model_dump is complete and explicit."""
        if not isinstance(data, dict):
            return data
        kind = str(getattr(data.get("kind"), "value", data.get("kind")))
        data = dict(data)
        if kind in ("hashed", "crossed"):
            data.setdefault("buckets", 1 << 16)  # collisions stay rare below ~6,000 distinct values
        if kind == "multi":
            data.setdefault("separator", "|")
            data.setdefault("max_len", 8)
        return data

    @model_validator(mode="after")
    def _kind_keys(self) -> "FeatureSpec":
        kind = self.kind.value
        for key, owner in _KIND_KEYS.items():
            if getattr(self, key) is not None and owner != kind:
                raise ValueError(f"feature {self.name!r}: key {key!r} belongs to kind {owner!r}, not {kind!r}")
        if self.kind is FeatureKind.NUMERIC:
            if self.buckets > 1000:
                raise ValueError(f"feature {self.name!r}: numeric buckets must be at most 1000, got {self.buckets}")
            if self.boundaries is not None:
                b = self.boundaries
                if not b or any(not math.isfinite(v) for v in b) or any(x >= y for x, y in zip(b, b[1:])):
                    raise ValueError(f"feature {self.name!r}: boundaries must be finite and strictly increasing, got {list(b)}")
        if self.kind is FeatureKind.CROSSED:
            if self.columns is None or len(self.columns) < 2 or len(set(self.columns)) != len(self.columns):
                raise ValueError(f"feature {self.name!r}: a crossed feature needs `columns`: two or more distinct column names, got {self.columns}")
        if self.kind is FeatureKind.MULTI and not self.separator:
            raise ValueError(f"feature {self.name!r}: separator must be a non-empty string")
        return self

    @property
    def slots(self) -> int:
        """Columns this feature takes in the encoded (N, S) id array: max_len for multi, else 1."""
        return int(self.max_len) if self.kind is FeatureKind.MULTI and self.max_len else 1

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Columns of the file this feature reads: its own, or the crossed ones."""
        return tuple(self.columns) if self.kind is FeatureKind.CROSSED and self.columns else (self.name,)


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
    # A CSV or Parquet file, a folder of such shards (read in name order), or a glob such as
    # "logs/part-*.parquet"; relative to the YAML file's folder unless absolute.
    path: str
    # Text encoding of CSV files (e.g. latin-1); Parquet strings are always UTF-8.
    encoding: str = "utf-8"
    label: str
    # Further 0/1 label columns trained jointly with the click (multi-task), e.g. purchase after
    # click. A missing value means "no label for this row": it counts in no loss and no metric.
    tasks: tuple[str, ...] | None = None
    domain: DomainSpec
    features: tuple[FeatureSpec, ...] = Field(min_length=1)
    split: Split = Field(default_factory=RandomSplit)

    @model_validator(mode="after")
    def _distinct_columns(self) -> "DatasetSchema":
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {dupes}")
        tasks = list(self.tasks or ())
        if len(set(tasks)) != len(tasks) or self.label in tasks or self.domain.column in tasks:
            raise ValueError(f"tasks {tasks} must be distinct columns other than the label {self.label!r} and the domain column")
        reserved = {self.label, self.domain.column, *tasks}
        clash = sorted(reserved & set(names))
        if clash:
            raise ValueError(f"columns {clash} are the label, a task label or the domain column and cannot also be features")
        for f in self.features:
            if f.kind is FeatureKind.CROSSED:
                bad = sorted(reserved & set(f.input_columns))
                if bad:
                    raise ValueError(f"crossed feature {f.name!r} crosses {bad}: label and domain columns cannot be crossed")
        try:
            "".encode(self.encoding)
        except LookupError:
            raise ValueError(f"encoding {self.encoding!r} is not a text encoding Python knows (e.g. utf-8, latin-1)") from None
        return self

    @property
    def n_domains(self) -> int:
        return len(self.domain.values)

    @property
    def task_names(self) -> list[str]:
        """The extra label columns (multi-task), in order; empty for a click-only dataset."""
        return list(self.tasks or ())

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def groups(self) -> list[str]:
        """Feature groups in order of first appearance."""
        return list(dict.fromkeys(f.group for f in self.features))

    @property
    def n_slots(self) -> int:
        """Width S of the encoded id array: one column per scalar feature, max_len per multi feature."""
        return sum(f.slots for f in self.features)

    def raw_feature_columns(self) -> dict[str, bool]:
        """Input columns the features read (a crossed feature reads its crossed columns), in
        order, each with True when it holds numbers: what a row to score must carry."""
        numeric = {f.name for f in self.features if f.kind is FeatureKind.NUMERIC}
        return {c: c in numeric for f in self.features for c in f.input_columns}

    def required_columns(self) -> list[str]:
        """Columns a data file must hold: label, domain, each feature's input columns, the split column."""
        feats = [c for f in self.features for c in f.input_columns]
        cols = list(dict.fromkeys([self.label, *self.task_names, self.domain.column, *feats]))
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
            # A feature lists the keys every kind reads first, then those of one kind only.
            own = _KIND_KEYS if _model_at(model, e["loc"][:-1]) is FeatureSpec else {}
            general = [k for k in allowed if k not in own]
            msg = f"unknown key; allowed keys here: {', '.join(general)}" if allowed else "unknown key"
            special = [f"{k} ({own[k]})" for k in allowed if k in own]
            if special:
                msg += f"; for one kind only: {', '.join(special)}"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Best-effort list of field names at `loc` so an unknown-key error can say what exists."""
    return sorted(getattr(_model_at(model, loc), "model_fields", {}))


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The pydantic model that validates the mapping at `loc`, or None."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        current = _model_in(field.annotation)
        if current is None:
            return None
    return current


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
