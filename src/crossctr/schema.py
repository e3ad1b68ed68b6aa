"""Dataset schema: what a user's click log looks like, loaded from YAML and validated once.

A dataset YAML names the files (one CSV / Parquet file, a folder of shards or a glob under
`path:`, or several `sources:` each with its own domain), how text files are laid out
(`format:` delimiter, header, column names, comment, quote, encoding), the label column (or a
rule that makes a 0/1 label of it), the domain column with its allowed values, every feature
column with its kind and feature group, and how to split rows into train / validation / test.
Schema objects own no parameters; encoders and models are built from them.

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

import codecs
import enum
import math
import os
import re
from dataclasses import dataclass
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
    "FormatSpec",
    "SourceSpec",
    "LabelRule",
    "parse_label_rule",
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
# Kinds whose values can be namespaced by domain (`per_domain: true`): the value is the id.
_PER_DOMAIN_KINDS = ("categorical", "hashed")
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
    # Categorical and hashed: the same value in two domains is two different ids
    # ("book" item 17 is not "music" item 17). Values are prefixed with their domain when read,
    # for training, scoring and serving alike. (None = false: an unset key stays out of dumps,
    # so datasets written before it existed keep their identity.)
    per_domain: bool | None = None

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
        if self.per_domain and kind not in _PER_DOMAIN_KINDS:
            raise ValueError(f"feature {self.name!r}: per_domain applies to kinds {list(_PER_DOMAIN_KINDS)}, not {kind!r}")
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
    # The column that names each row's domain; with `sources:` that each give a domain the
    # files need no such column (the rows of a source get its domain under this name).
    column: str = "domain"
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


def _one_char(value: str | None, key: str) -> str | None:
    """A single-character format option; the two characters `\\t` (a YAML string in single
    quotes) and the word `tab` mean a tab."""
    if value is None:
        return None
    if value in ("\\t", "tab"):
        return "\t"
    if len(value) != 1:
        raise ValueError(f"format.{key} must be one character (e.g. \",\", \"\\t\", \";\"), got {value!r}")
    return value


class FormatSpec(StrictModel):
    """How the data files are laid out. Every key is optional; the defaults read a CSV with a
    header (a TSV for `.tsv`) or a Parquet file, chosen by the file name.

    Example:
        >>> f = FormatSpec(kind="csv", delimiter="\t", header=False, columns=["user_id", "item_id", "rating"])
        >>> f.columns, f.header
        (('user_id', 'item_id', 'rating'), False)
    """

    # csv: delimited text whatever the file name (.dat, .txt, none); parquet; None: by suffix
    # (.csv / .tsv / .txt are text, .parquet / .pq Parquet).
    kind: Literal["csv", "parquet"] | None = None
    delimiter: str | None = None  # one character; None: a tab for .tsv, else a comma
    header: bool = True  # False: the first line is data, and `columns` names the fields
    # Names of the fields, in file order. With header: false they are required; with a header
    # they replace the header's names (the header line is skipped).
    columns: tuple[str, ...] | None = None
    comment: str | None = None  # lines starting with this character are skipped (not counted as rows)
    quote: str | None = '"'  # quoting character; null: no quoting (a " is an ordinary character)
    encoding: str | None = None  # text encoding (default: the dataset's `encoding`, utf-8)

    @model_validator(mode="after")
    def _check(self) -> "FormatSpec":
        for key in ("delimiter", "comment", "quote"):
            val = getattr(self, key)
            fixed = _one_char(val if val != "" else None, key)
            if fixed != val:
                object.__setattr__(self, key, fixed)
        if not self.header and not self.columns:
            raise ValueError("format.header: false needs format.columns, the names of the fields in file order")
        if self.columns is not None:
            dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
            if dupes or not all(self.columns):
                raise ValueError(f"format.columns must be distinct non-empty names; repeated: {dupes}")
        if self.kind == "parquet":
            text_only = [k for k in ("delimiter", "columns", "comment", "encoding") if getattr(self, k) is not None]
            if text_only or not self.header:
                raise ValueError(f"format keys {text_only or ['header']} apply to kind csv only; Parquet files carry their own column names and types")
        if self.delimiter is not None and self.delimiter in (self.quote, self.comment):
            raise ValueError(f"format.delimiter {self.delimiter!r} cannot also be the quote or comment character")
        if self.encoding is not None:
            _check_encoding(self.encoding)
        return self

    def merged(self, other: "FormatSpec | None") -> "FormatSpec":
        """This format with the keys `other` sets explicitly taking precedence (a source's own format)."""
        if other is None:
            return self
        return self.model_copy(update={k: getattr(other, k) for k in other.model_fields_set})


def _check_encoding(encoding: str) -> None:
    try:
        "".encode(encoding)
    except LookupError:
        raise ValueError(f"encoding {encoding!r} is not a text encoding Python knows (e.g. utf-8, latin-1)") from None


class SourceSpec(StrictModel):
    """One entry of `sources:`: a file, folder or glob, and the domain of all its rows.

    Example:
        >>> SourceSpec(path="raw/book.dat", domain="book").domain
        'book'
    """

    path: str  # relative to the YAML file's folder unless absolute; a glob may use * ? [..] **
    # Every row of these files belongs to this domain (no domain column needed). None: the
    # files carry the domain column.
    domain: str | None = None
    format: FormatSpec | None = None  # keys that differ from the dataset's `format:`


_RULE_OPS = ("==", "!=", ">=", "<=", ">", "<", "in")


@dataclass(frozen=True)
class LabelRule:
    """A parsed `label: {column, positive}` rule: the rows where `op` holds are positive (1).

    Numeric (`numeric=True`) when every operand is a number: the column is compared as numbers;
    otherwise as text (`== yes`, `in [like, love]`).

    Example:
        >>> parse_label_rule(">= 4")
        LabelRule(op='>=', values=(4.0,), numeric=True)
        >>> parse_label_rule("in [like, 'love']")
        LabelRule(op='in', values=('like', 'love'), numeric=False)
    """

    op: str
    values: tuple[Any, ...]
    numeric: bool


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_label_rule(text: str) -> LabelRule:
    """Parse `">= 4"`, `"> 3"`, `"== 5"`, `"!= 0"`, `"< 2"`, `"in [4, 5]"`, `"== yes"`."""
    text = str(text).strip()
    m = re.fullmatch(r"in\s*\[(.*)\]", text, flags=re.S)
    if m:
        op, raw = "in", [v for v in (_unquote(p) for p in m.group(1).split(",")) if v != ""]
        if not raw:
            raise ValueError(f"label rule {text!r}: `in [...]` needs at least one value")
    else:
        m = re.fullmatch(r"(==|!=|>=|<=|>|<)\s*(.+)", text, flags=re.S)
        if not m:
            raise ValueError(
                f"label rule {text!r} not understood; write one of \">= 4\", \"> 3\", \"== 5\", \"!= 0\", \"< 2\", "
                "\"in [4, 5]\" or \"== yes\" (rows where it holds are positive)"
            )
        op, raw = m.group(1), [_unquote(m.group(2))]
    nums: list[float] = []
    for v in raw:
        try:
            nums.append(float(v))
        except ValueError:
            break
    numeric = len(nums) == len(raw) and all(math.isfinite(x) for x in nums)
    if op in (">=", "<=", ">", "<") and not numeric:
        raise ValueError(f"label rule {text!r}: {op} compares numbers; {raw[0]!r} is not a number")
    return LabelRule(op, tuple(nums) if numeric else tuple(raw), numeric)


class DatasetSchema(StrictModel):
    name: str
    # A CSV or Parquet file, a folder of such shards (read in name order), or a glob such as
    # "logs/part-*.parquet"; relative to the YAML file's folder unless absolute. Give either
    # `path` or `sources`.
    path: str | None = None
    # Several files, folders or globs, each optionally with the domain of all its rows.
    sources: tuple[SourceSpec, ...] | None = None
    # How text files are laid out (delimiter, header, column names, comment, quote, encoding);
    # None: CSV with a header (TSV for .tsv) or Parquet, by file name.
    format: FormatSpec | None = None
    # Text encoding of CSV files (e.g. latin-1); Parquet strings are always UTF-8.
    encoding: str = "utf-8"
    # The 0/1 label column. In YAML also `label: {column: rating, positive: ">= 4"}`, stored as
    # the column plus `label_positive` (the rule); every reader (training, predict, serve)
    # applies it, as it is part of the schema saved with the encoders.
    label: str
    label_positive: str | None = None
    # Further 0/1 label columns trained jointly with the click (multi-task), e.g. purchase after
    # click. A missing value means "no label for this row": it counts in no loss and no metric.
    tasks: tuple[str, ...] | None = None
    domain: DomainSpec
    features: tuple[FeatureSpec, ...] = Field(min_length=1)
    split: Split = Field(default_factory=RandomSplit)
    # Keep a constant feature / a domain split with one label class (warn instead of refusing);
    # the same as `crossctr prepare --allow-constant-features / --allow-single-class`, for
    # every reader of this dataset (`crossctr train` on the YAML too). None = false (new keys
    # default to None so that the identity of datasets written before them is unchanged).
    allow_constant_features: bool | None = None
    allow_single_class: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """`label: {column, positive}` -> label + label_positive; `domain:` values from `sources:`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        label = data.get("label")
        if isinstance(label, dict):
            unknown = sorted(set(label) - {"column", "positive"})
            if unknown or "column" not in label:
                raise ValueError(f"label: a rule is {{column: NAME, positive: \">= 4\"}}; got keys {sorted(label)}")
            if "label_positive" in data:
                raise ValueError("give the label rule once: either label: {column, positive} or label_positive")
            data["label"] = label["column"]
            if label.get("positive") is not None:
                data["label_positive"] = str(label["positive"])
        sources = data.get("sources")
        if isinstance(sources, (list, tuple)) and sources:
            doms = [s.get("domain") for s in sources if isinstance(s, dict)]
            domain = data.get("domain")
            if domain is None or (isinstance(domain, dict) and "values" not in domain):
                if any(d is None for d in doms):
                    raise ValueError("domain.values is needed unless every source names its domain")
                domain = dict(domain or {})
                domain["values"] = list(dict.fromkeys(str(d) for d in doms))
                data["domain"] = domain
        return data

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
        _check_encoding(self.encoding)
        if (self.path is None) == (self.sources is None) or (self.sources is not None and not self.sources):
            raise ValueError("give the data files either as `path:` (a file, folder or glob) or as `sources:` (a list of {path, domain}), not both")
        for src in self.sources or ():
            if src.domain is not None and src.domain not in self.domain.values:
                raise ValueError(f"source {src.path!r}: domain {src.domain!r} is not in domain.values {list(self.domain.values)}")
        if self.label_positive is not None:
            parse_label_rule(self.label_positive)
        for src in self.sources or ():
            FormatSpec.model_validate((self.format or FormatSpec()).merged(src.format).model_dump())  # a merged format must be valid too
        enc = self.format.encoding if self.format is not None else None
        if enc is not None and "encoding" in self.model_fields_set and codecs.lookup(enc).name != codecs.lookup(self.encoding).name:
            raise ValueError(f"encoding {self.encoding!r} and format.encoding {enc!r} disagree; keep one")
        return self

    @property
    def label_rule(self) -> LabelRule | None:
        """The parsed `label_positive` rule, or None when the label column holds 0/1."""
        return None if self.label_positive is None else parse_label_rule(self.label_positive)

    @property
    def source_specs(self) -> tuple[SourceSpec, ...]:
        """Every source with its format (the dataset's `format:` merged with the source's own)."""
        base = self.format or FormatSpec()
        if self.sources is None:
            return (SourceSpec(path=self.path or "", format=self._text_format(base)),)
        return tuple(s.model_copy(update={"format": self._text_format(base.merged(s.format))}) for s in self.sources)

    def _text_format(self, fmt: FormatSpec) -> FormatSpec:
        return fmt if fmt.encoding is not None else fmt.model_copy(update={"encoding": self.encoding})

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
        """The data path (with `sources:`, the first source's; the YAML folder names them all)."""
        p = Path(self.path if self.path is not None else (self.sources[0].path if self.sources else "."))
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
        if path.is_symlink() and not path.exists():
            raise ConfigError(f"{path}: a symbolic link that points nowhere or into a loop ({os.readlink(path)!r}); fix the link")
        raise ConfigError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is read transparently
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); YAML files must be UTF-8: "
            "re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return validate_model(model, data, str(path))
