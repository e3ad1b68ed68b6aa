"""Encoders that turn raw columns into compact per-feature integer ids.

Fitted on the training split only (fit/transform, learned state ends in `_`) and saved
as JSON beside the model, so a predictor needs no training code and no pickles.

Every feature's ids share one layout: the reserved ids below, then one id per value
(categorical, multi), per bucket (numeric) or per hash bucket (hashed, crossed). A multi-valued
feature takes `max_len` columns ("slots") of the encoded array, padded with PAD_ID; every other
feature takes one. The hash is FNV-1a (64 bit) over the UTF-8 bytes of a value, computed with
numpy over the whole column at once: it depends on nothing but the bytes, so ids are the same
on every machine, Python version and run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

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
    "HashedEncoder",
    "CrossedEncoder",
    "MultiEncoder",
    "FeatureEncoder",
    "FieldCardinalities",
    "fnv1a64",
]

PAD_ID = 0  # padding for multi-valued features; never produced by a scalar feature
OOV_ID = 1  # a value not in the training vocabulary (unseen, or rarer than min_count)
MISSING_ID = 2  # a null / NaN value: missingness is information, so it gets its own id
N_RESERVED = 3

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _as_string(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col if pa.types.is_string(col.type) else col.cast(pa.string())


def fnv1a64(col: pa.Array) -> np.ndarray:
    """FNV-1a 64-bit hash of every string of `col` as uint64 (nulls hash as the empty string).

    Vectorised: the distinct strings are hashed (one numpy step per byte position, over the
    strings at least that long), then spread to the rows.

    Example:
        >>> hex(int(fnv1a64(pa.array(["a"]))[0]))
        '0xaf63dc4c8601ec8c'
    """
    arr = _as_string(col)
    # Repeated values (brands, genres) are hashed once; near-unique ones (user ids) directly,
    # as building their dictionary would cost more than hashing them.
    if len(arr) > 4096 and len(pc.unique(arr.slice(0, 4096))) < 1024:
        enc = pc.dictionary_encode(arr)
        uniq = _fnv1a64_distinct(enc.dictionary)
        idx = enc.indices.fill_null(0).to_numpy(zero_copy_only=False)
        out = uniq[idx] if len(uniq) else np.full(len(arr), _FNV_OFFSET, dtype=np.uint64)
        if enc.indices.null_count:
            out[enc.indices.is_null().to_numpy(zero_copy_only=False)] = _FNV_OFFSET
        return out
    return _fnv1a64_distinct(arr)


def _fnv1a64_distinct(arr: pa.Array) -> np.ndarray:
    n = len(arr)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return h
    if arr.offset or pa.types.is_large_string(arr.type):
        arr = pa.concat_arrays([arr.cast(pa.string())])  # offsets from 0, 32-bit
    bufs = arr.buffers()
    if bufs[2] is None:  # every string is empty
        return h
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=arr.offset + n + 1)[arr.offset :]
    data = np.frombuffer(bufs[2], dtype=np.uint8)
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets)
    if arr.null_count:  # a null slot may still cover bytes in principle: hash it as ""
        lengths = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    order = np.argsort(-lengths, kind="stable")  # longest first: the strings still going are a prefix
    neg = -lengths[order]  # ascending
    for k in range(int(-neg[0])):
        live = int(np.searchsorted(neg, -k, side="left"))  # strings with length > k
        rows = order[:live]
        h[rows] = (h[rows] ^ data[starts[rows] + k].astype(np.uint64)) * _FNV_PRIME
    return h


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over the output (uint64 -> uint64)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class CategoricalEncoder:
    """Vocabulary of values seen at least `min_count` times in train, most frequent first."""

    def __init__(self, min_count: int = 1) -> None:
        self.min_count = min_count

    def fit(self, col: pa.Array) -> CategoricalEncoder:
        counts = pc.value_counts(_as_string(col).drop_null()).flatten()
        return self.fit_counts(counts[0], counts[1].to_numpy())

    def fit_counts(self, values: pa.Array, counts: np.ndarray) -> CategoricalEncoder:
        """Fit from distinct values and their training counts (what a streaming pass collects)."""
        t = pa.table({"v": _as_string(values), "n": pa.array(np.asarray(counts, dtype=np.int64))})
        t = t.filter(pc.greater_equal(t.column("n"), self.min_count))
        # Most frequent first, ties by value (UTF-8 byte order = code point order): deterministic.
        t = t.sort_by([("n", "descending"), ("v", "ascending")])
        self.vocab_ = t.column("v").to_pylist()
        return self

    @property
    def cardinality(self) -> int:
        return N_RESERVED + len(self.vocab_)

    def _value_set(self) -> pa.Array:
        cached = getattr(self, "_values", None)
        if cached is None or len(cached) != len(self.vocab_):
            cached = self._values = pa.array(self.vocab_, type=pa.string())
        return cached

    def transform(self, col: pa.Array) -> np.ndarray:
        col = _as_string(col)
        idx = pc.index_in(col, value_set=self._value_set())
        out = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32) + N_RESERVED
        out[out == N_RESERVED - 1] = OOV_ID
        if col.null_count:
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
    def from_state(cls, state: dict[str, Any]) -> CategoricalEncoder:
        enc = cls(state["min_count"])
        enc.vocab_ = list(state["vocab"])
        return enc


class NumericBucketizer:
    """Buckets of a number: v falls in bucket searchsorted(bounds, v, 'right').

    The boundaries are the train quantiles (`buckets` - 1 of them, duplicates merged) or, when
    `boundaries` is given, exactly those.
    """

    def __init__(self, buckets: int = 10, boundaries: Sequence[float] | None = None) -> None:
        self.buckets = buckets
        self.boundaries = None if boundaries is None else [float(b) for b in boundaries]

    def fit(self, col: pa.Array | np.ndarray) -> NumericBucketizer:
        if isinstance(col, pa.Array | pa.ChunkedArray):
            x = col.drop_null().to_numpy(zero_copy_only=False)
        else:
            x = np.asarray(col)
        x = x.astype(np.float64)
        x = x[np.isfinite(x)]
        if self.boundaries is not None:
            self.boundaries_: list[float] = list(self.boundaries)
        elif len(x) == 0:
            self.boundaries_ = []
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
        state: dict[str, Any] = {"kind": "numeric", "buckets": self.buckets, "boundaries": self.boundaries_}
        if self.boundaries is not None:
            state["fixed"] = True
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NumericBucketizer:
        bounds = [float(b) for b in state["boundaries"]]
        enc = cls(state["buckets"], bounds if state.get("fixed") else None)
        enc.boundaries_ = bounds
        return enc


class HashedEncoder:
    """Value -> N_RESERVED + fnv1a64(value) mod buckets; nothing to fit, nothing to store."""

    def __init__(self, buckets: int) -> None:
        self.buckets = buckets

    def fit(self, col: pa.Array | None = None) -> HashedEncoder:
        return self

    @property
    def cardinality(self) -> int:
        return N_RESERVED + self.buckets

    def transform(self, col: pa.Array) -> np.ndarray:
        col = _as_string(col)
        out = (fnv1a64(col) % np.uint64(self.buckets)).astype(np.int32) + N_RESERVED
        if col.null_count:
            out[col.is_null().to_numpy(zero_copy_only=False)] = MISSING_ID
        return out

    def state(self) -> dict[str, Any]:
        return {"kind": "hashed", "buckets": self.buckets}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HashedEncoder:
        return cls(state["buckets"])


class CrossedEncoder:
    """Hash of several columns' values together; missing if any of them is missing.

    A column that is a numeric feature enters as its bucket id (so `price` crosses as a price
    level, not as an exact price); any other column enters as its text.
    """

    def __init__(self, columns: Sequence[str], buckets: int) -> None:
        self.columns = list(columns)
        self.buckets = buckets

    def fit(self, col: pa.Array | None = None) -> CrossedEncoder:
        return self

    @property
    def cardinality(self) -> int:
        return N_RESERVED + self.buckets

    def combine(self, tokens: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """tokens: per column (uint64 token hash, bool missing) -> ids."""
        acc: np.ndarray | None = None
        missing: np.ndarray | None = None
        for i, (tok, miss) in enumerate(tokens):
            h = _mix64(tok ^ np.uint64(i + 1))  # position matters: (a, b) and (b, a) differ
            acc = h if acc is None else _mix64(acc ^ h)
            missing = miss if missing is None else (missing | miss)
        assert acc is not None and missing is not None
        out = (acc % np.uint64(self.buckets)).astype(np.int32) + N_RESERVED
        out[missing] = MISSING_ID
        return out

    def state(self) -> dict[str, Any]:
        return {"kind": "crossed", "columns": self.columns, "buckets": self.buckets}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CrossedEncoder:
        return cls(state["columns"], state["buckets"])


class MultiEncoder:
    """Several values per cell ("Action|Comedy") -> `max_len` ids, PAD_ID after the last.

    The vocabulary is fitted on the single values (tokens) as a categorical one. A null or
    empty cell is MISSING_ID in the first slot; values past max_len are dropped; empty
    tokens ("a||b") are skipped.
    """

    def __init__(self, separator: str = "|", max_len: int = 8, min_count: int = 1) -> None:
        self.separator, self.max_len, self.min_count = separator, max_len, min_count
        self.vocab = CategoricalEncoder(min_count)

    def tokens(self, col: pa.Array) -> pa.ListArray:
        return pc.split_pattern(_as_string(col), self.separator)

    def token_counts(self, col: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """Distinct single values of a column of cells, with how often each occurs."""
        cells = pc.value_counts(_as_string(col).drop_null()).flatten()  # split each distinct cell once
        lists = self.tokens(cells[0])
        flat = pc.list_flatten(lists)
        weight = np.repeat(cells[1].to_numpy(), pc.list_value_length(lists).to_numpy(zero_copy_only=False))
        keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
        t = pa.table({"v": flat.filter(pa.array(keep)), "n": weight[keep]}).group_by("v").aggregate([("n", "sum")])
        return t.column("v").combine_chunks(), t.column("n_sum").to_numpy()

    def fit(self, col: pa.Array) -> MultiEncoder:
        values, counts = self.token_counts(col)
        return self.fit_counts(values, counts)

    def fit_counts(self, values: pa.Array, counts: np.ndarray) -> MultiEncoder:
        self.vocab.fit_counts(values, counts)
        self.vocab_ = self.vocab.vocab_
        return self

    @property
    def cardinality(self) -> int:
        return self.vocab.cardinality

    def transform(self, col: pa.Array) -> np.ndarray:
        """(N,) cells -> (N, max_len) int32 ids; each distinct cell is split and looked up once."""
        enc = pc.dictionary_encode(_as_string(col))
        ids = self._transform_distinct(enc.dictionary)  # (U, max_len)
        missing = np.full((1, self.max_len), PAD_ID, dtype=np.int32)
        missing[0, 0] = MISSING_ID
        ids = np.concatenate([ids, missing])  # row U: a null cell
        idx = enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False)
        return ids[idx]

    def _transform_distinct(self, col: pa.Array) -> np.ndarray:
        n = len(col)
        lists = self.tokens(col)
        flat = pc.list_flatten(lists)
        lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        row = np.repeat(np.arange(n), lengths)  # (T,) row of each token
        keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
        row, flat = row[keep], flat.filter(pa.array(keep))
        first = np.searchsorted(row, np.arange(n))  # index of each row's first kept token
        pos = np.arange(len(row)) - first[row] if len(row) else row  # slot of each token
        out = np.full((n, self.max_len), PAD_ID, dtype=np.int32)
        fits = pos < self.max_len
        out[row[fits], pos[fits]] = self.vocab.transform(flat)[fits]
        out[np.bincount(row, minlength=n) == 0, 0] = MISSING_ID  # null or empty cell
        return out

    def decode(self, ids: np.ndarray) -> list[list[str] | None]:
        """Inverse of transform: (N, max_len) ids -> lists of values (None for a missing cell)."""
        out: list[list[str] | None] = []
        for r in np.asarray(ids):
            if r[0] == MISSING_ID:
                out.append(None)
            else:
                # cast: a present cell's slots hold vocabulary or OOV ids, which decode to strings
                # (transform writes MISSING_ID only into slot 0 of a missing cell)
                out.append(cast("list[str]", self.vocab.decode(r[r != PAD_ID])))
        return out

    def state(self) -> dict[str, Any]:
        return {
            "kind": "multi",
            "separator": self.separator,
            "max_len": self.max_len,
            "min_count": self.min_count,
            "vocab": self.vocab_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MultiEncoder:
        enc = cls(state["separator"], state["max_len"], state["min_count"])
        enc.vocab.vocab_ = enc.vocab_ = list(state["vocab"])
        return enc


Encoder = CategoricalEncoder | NumericBucketizer | HashedEncoder | CrossedEncoder | MultiEncoder

_FROM_STATE: dict[str, Any] = {
    "categorical": CategoricalEncoder,
    "numeric": NumericBucketizer,
    "hashed": HashedEncoder,
    "crossed": CrossedEncoder,
    "multi": MultiEncoder,
}


def new_encoder(spec: FeatureSpec) -> Encoder:
    """An unfitted encoder for one feature spec."""
    if spec.kind is FeatureKind.NUMERIC:
        return NumericBucketizer(spec.buckets, spec.boundaries)
    if spec.kind is FeatureKind.HASHED:
        return HashedEncoder(spec.buckets)
    if spec.kind is FeatureKind.CROSSED:
        return CrossedEncoder(spec.input_columns, spec.buckets)
    if spec.kind is FeatureKind.MULTI:
        return MultiEncoder(spec.separator or "|", spec.slots, spec.min_count)
    return CategoricalEncoder(spec.min_count)


_new_encoder = new_encoder  # the name this module used before


class FieldCardinalities(list):
    """Cardinality of each feature (a plain list of ints) that also says how many slots each
    feature takes in the encoded array; `FeatureEmbedding` reads `.slots` to mean-pool the
    slots of a multi-valued feature. Equal to the plain list it holds.

    Example:
        >>> c = FieldCardinalities([5, 9], slots=[1, 3])
        >>> c == [5, 9], c.slots
        (True, (1, 3))
    """

    def __init__(self, cards: Iterable[int], slots: Iterable[int]) -> None:
        super().__init__(int(c) for c in cards)
        self.slots = tuple(int(s) for s in slots)
        if len(self.slots) != len(self):
            raise ValueError(f"one slot count per feature: {len(self)} cardinalities, {len(self.slots)} slot counts")


class FeatureEncoder:
    """All feature encoders of a dataset plus the domain mapping, fitted together on train."""

    def __init__(self, schema: DatasetSchema) -> None:
        self.schema = schema

    def fit(self, table: pa.Table) -> FeatureEncoder:
        self.encoders_ = {f.name: new_encoder(f) for f in self.schema.features}
        for f in self.schema.features:
            if f.kind not in (FeatureKind.HASHED, FeatureKind.CROSSED):
                self.encoders_[f.name].fit(table.column(f.name).combine_chunks())
        return self

    @property
    def cardinalities(self) -> list[int]:
        """Per feature; a `FieldCardinalities` whose `.slots` gives each feature's width."""
        return FieldCardinalities((self.encoders_[name].cardinality for name in self.schema.feature_names), self.slots)

    @property
    def slots(self) -> list[int]:
        return [f.slots for f in self.schema.features]

    def slot_columns(self) -> list[slice]:
        """The columns of the encoded (N, S) array that each feature fills."""
        ends = np.cumsum([0, *self.slots])
        return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:], strict=False)]

    def _token(self, table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
        """One crossed column as (uint64 token, missing mask)."""
        enc = self.encoders_.get(column)
        if isinstance(enc, NumericBucketizer):
            ids = enc.transform(table.column(column).combine_chunks())
            return _mix64(ids.astype(np.uint64)), ids == MISSING_ID
        col = _as_string(table.column(column))
        return fnv1a64(col), col.is_null().to_numpy(zero_copy_only=False)

    def transform(self, table: pa.Table) -> np.ndarray:
        """Encode a validated table into an (N, S) int32 array of per-feature local ids.

        S is the number of features when none is multi-valued (slots: `slot_columns`).
        """
        out = np.empty((table.num_rows, self.schema.n_slots), dtype=np.int32)
        for spec, cols in zip(
            self.schema.features, self.slot_columns(), strict=False
        ):  # column-wise, vectorised per column
            enc = self.encoders_[spec.name]
            if isinstance(enc, CrossedEncoder):
                out[:, cols] = enc.combine(self._token(table, c) for c in enc.columns)[:, None]
            elif isinstance(enc, MultiEncoder):
                out[:, cols] = enc.transform(table.column(spec.name).combine_chunks())
            else:
                out[:, cols.start] = enc.transform(table.column(spec.name).combine_chunks())
        return out

    def domain_ids(self, table: pa.Table) -> np.ndarray:
        col = table.column(self.schema.domain.column).combine_chunks().cast(pa.string())
        return (
            pc.index_in(col, value_set=pa.array(self.schema.domain.values))
            .to_numpy(zero_copy_only=False)
            .astype(np.int64)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.model_dump(mode="json"),
            "reserved": {"PAD": PAD_ID, "OOV": OOV_ID, "MISSING": MISSING_ID},
            "features": {name: enc.state() for name, enc in self.encoders_.items()},
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoder:
        enc = cls(DatasetSchema.model_validate(data["schema"]))
        states = data["features"]
        enc.encoders_ = {
            f.name: _FROM_STATE[states[f.name]["kind"]].from_state(states[f.name]) for f in enc.schema.features
        }
        return enc

    @classmethod
    def load(cls, path: str | Path) -> FeatureEncoder:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
