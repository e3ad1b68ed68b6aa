"""Encoders that turn raw columns into compact per-feature integer ids.

Fitted on the training split only (fit/transform, learned state ends in `_`) and saved
as JSON beside the model, so a predictor needs no training code and no pickles.

Every feature's ids share one layout: the reserved ids below, then one id per value
(categorical) or per quantile bucket (numeric).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossctr.schema import DatasetSchema, FeatureKind, FeatureSpec

__all__ = [
    "PAD_ID",
    "OOV_ID",
    "MISSING_ID",
    "N_RESERVED",
    "CategoricalEncoder",
    "NumericBucketizer",
    "FeatureEncoder",
]

PAD_ID = 0  # padding for multi-valued features; never produced by a scalar feature
OOV_ID = 1  # a value not in the training vocabulary (unseen, or rarer than min_count)
MISSING_ID = 2  # a null / NaN value: missingness is information, so it gets its own id
N_RESERVED = 3


class CategoricalEncoder:
    """Vocabulary of values seen at least `min_count` times in train, most frequent first."""

    def __init__(self, min_count: int = 1) -> None:
        self.min_count = min_count

    def fit(self, col: pa.Array) -> "CategoricalEncoder":
        counts = pc.value_counts(col.drop_null()).flatten()
        values = counts[0].to_numpy(zero_copy_only=False).astype(object)
        freq = counts[1].to_numpy()
        keep = freq >= self.min_count
        values, freq = values[keep], freq[keep]
        # Most frequent first, ties by value, so the vocabulary is deterministic.
        order = sorted(range(len(values)), key=lambda i: (-int(freq[i]), str(values[i])))
        self.vocab_ = [str(values[i]) for i in order]
        return self

    @property
    def cardinality(self) -> int:
        return N_RESERVED + len(self.vocab_)

    def transform(self, col: pa.Array) -> np.ndarray:
        idx = pc.index_in(col, value_set=pa.array(self.vocab_, type=pa.string()))
        out = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32) + N_RESERVED
        out[out == N_RESERVED - 1] = OOV_ID
        out[col.is_null().to_numpy(zero_copy_only=False)] = MISSING_ID
        return out

    def decode(self, ids: np.ndarray) -> list[str | None]:
        """Inverse of transform for in-vocabulary ids; OOV decodes to '<OOV>', missing to None."""
        table = np.array([None, "<OOV>", None, *self.vocab_], dtype=object)
        table[PAD_ID] = "<PAD>"
        return list(table[ids])

    def state(self) -> dict[str, Any]:
        return {"kind": "categorical", "min_count": self.min_count, "vocab": self.vocab_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CategoricalEncoder":
        enc = cls(state["min_count"])
        enc.vocab_ = list(state["vocab"])
        return enc


class NumericBucketizer:
    """Quantile buckets fitted on train; a value v falls in bucket searchsorted(bounds, v, 'right')."""

    def __init__(self, buckets: int = 10) -> None:
        self.buckets = buckets

    def fit(self, col: pa.Array) -> "NumericBucketizer":
        x = col.drop_null().to_numpy(zero_copy_only=False).astype(np.float64)
        x = x[np.isfinite(x)]
        if len(x) == 0:
            self.boundaries_: list[float] = []
        else:
            qs = np.quantile(x, np.linspace(0, 1, self.buckets + 1)[1:-1])
            self.boundaries_ = [float(b) for b in np.unique(qs)]
        return self

    @property
    def cardinality(self) -> int:
        return N_RESERVED + len(self.boundaries_) + 1

    def transform(self, col: pa.Array) -> np.ndarray:
        x = col.to_numpy(zero_copy_only=False).astype(np.float64)
        out = np.searchsorted(np.asarray(self.boundaries_), x, side="right").astype(np.int32) + N_RESERVED
        out[np.isnan(x)] = MISSING_ID
        return out

    def state(self) -> dict[str, Any]:
        return {"kind": "numeric", "buckets": self.buckets, "boundaries": self.boundaries_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "NumericBucketizer":
        enc = cls(state["buckets"])
        enc.boundaries_ = [float(b) for b in state["boundaries"]]
        return enc


Encoder = CategoricalEncoder | NumericBucketizer


def _new_encoder(spec: FeatureSpec) -> Encoder:
    if spec.kind is FeatureKind.NUMERIC:
        return NumericBucketizer(spec.buckets)
    return CategoricalEncoder(spec.min_count)


class FeatureEncoder:
    """All feature encoders of a dataset plus the domain mapping, fitted together on train."""

    def __init__(self, schema: DatasetSchema) -> None:
        self.schema = schema

    def fit(self, table: pa.Table) -> "FeatureEncoder":
        self.encoders_ = {f.name: _new_encoder(f).fit(table.column(f.name).combine_chunks()) for f in self.schema.features}
        return self

    @property
    def cardinalities(self) -> list[int]:
        return [self.encoders_[name].cardinality for name in self.schema.feature_names]

    def transform(self, table: pa.Table) -> np.ndarray:
        """Encode a validated table into an (N, F) int32 array of per-feature local ids."""
        out = np.empty((table.num_rows, len(self.schema.features)), dtype=np.int32)
        for j, name in enumerate(self.schema.feature_names):  # column-wise, vectorised per column
            out[:, j] = self.encoders_[name].transform(table.column(name).combine_chunks())
        return out

    def domain_ids(self, table: pa.Table) -> np.ndarray:
        col = table.column(self.schema.domain.column).combine_chunks().cast(pa.string())
        return pc.index_in(col, value_set=pa.array(self.schema.domain.values)).to_numpy(zero_copy_only=False).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.model_dump(mode="json"),
            "reserved": {"PAD": PAD_ID, "OOV": OOV_ID, "MISSING": MISSING_ID},
            "features": {name: enc.state() for name, enc in self.encoders_.items()},
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureEncoder":
        enc = cls(DatasetSchema.model_validate(data["schema"]))
        states = data["features"]
        enc.encoders_ = {
            f.name: (NumericBucketizer if states[f.name]["kind"] == "numeric" else CategoricalEncoder).from_state(states[f.name])
            for f in enc.schema.features
        }
        return enc

    @classmethod
    def load(cls, path: str | Path) -> "FeatureEncoder":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
