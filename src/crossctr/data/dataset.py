"""From a validated table to encoded splits and batches of index tensors.

raw table -> split (train / valid / test) -> encoders fitted on train -> (N, F) int32 ids,
domain ids, labels -> `Batch` tensors sliced from pre-encoded arrays, no per-row Python. `Batch` itself lives in
`crossctr.data.batch` (torch only: models import it without the table readers) and is
re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from crossctr.data.batch import Batch, Shard
from crossctr.data.encoders import FeatureEncoder
from crossctr.data.io import DataError
from crossctr.schema import ColumnSplit, DatasetSchema, RandomSplit, TimeSplit

__all__ = ["Batch", "Shard", "EncodedSplit", "PreparedData", "split_table", "prepare", "iterate_batches"]

SPLITS = ("train", "valid", "test")
log = logging.getLogger(__name__)


@dataclass
class EncodedSplit:
    """One split, fully encoded: torch tensors that batches are sliced from."""

    features: torch.Tensor  # (N, F) int32
    domain: torch.Tensor  # (N,) int64
    label: torch.Tensor  # (N,) float32
    tasks: torch.Tensor | None = None  # (N, T) float32 extra labels, NaN where a row has none

    @classmethod
    def from_numpy(cls, x: np.ndarray, d: np.ndarray, y: np.ndarray, tasks: np.ndarray | None = None) -> EncodedSplit:
        t = None if tasks is None else torch.from_numpy(np.ascontiguousarray(tasks, dtype=np.float32))
        return cls(
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.int32)),
            torch.from_numpy(d.astype(np.int64)),
            torch.from_numpy(y.astype(np.float32)),
            t,
        )

    def __len__(self) -> int:
        return self.label.shape[0]

    def select(self, index: torch.Tensor) -> EncodedSplit:
        """Rows at `index` (a bool mask or int positions)."""
        return EncodedSplit(
            self.features[index],
            self.domain[index],
            self.label[index],
            None if self.tasks is None else self.tasks[index],
        )

    def only_domains(self, domains: list[int]) -> EncodedSplit:
        return self.select(torch.isin(self.domain, torch.tensor(domains)))

    def domain_counts(self, n_domains: int) -> list[int]:
        return torch.bincount(self.domain, minlength=n_domains).tolist()

    def batch(self, index: torch.Tensor | slice, shard: Shard | None = None) -> Batch:
        """Rows at `index` as a Batch (features widened by the model, not here); `shard`: data-parallel only."""
        tasks = None if self.tasks is None else self.tasks[index]
        return Batch(self.features[index], self.domain[index], self.label[index], tasks, shard)

    def as_batch(self) -> Batch:
        return Batch(self.features, self.domain, self.label, self.tasks)


def iterate_batches(
    data: EncodedSplit, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[Batch]:
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else None
    for start in range(0, n, batch_size):
        yield data.batch(slice(start, start + batch_size) if order is None else order[start : start + batch_size])


def split_table(table: pa.Table, schema: DatasetSchema) -> dict[str, pa.Table]:
    """Assign every row to exactly one of train / valid / test."""
    split = schema.split
    n = table.num_rows
    if isinstance(split, RandomSplit):
        rng = np.random.default_rng(split.seed)
        u = rng.random(n)
        a, b = split.fractions[0], split.fractions[0] + split.fractions[1]
        which = np.where(u < a, 0, np.where(u < b, 1, 2))
    elif isinstance(split, TimeSplit):
        col = table.column(split.column).combine_chunks()
        try:
            t = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(
                f"split column {split.column!r} must be numeric (a day or timestamp), got {col.type}"
            ) from None
        if np.isnan(t).any():
            raise DataError(f"split column {split.column!r} is missing on {int(np.isnan(t).sum())} rows")
        which = np.where(t < split.valid_start, 0, np.where(t < split.test_start, 1, 2))
    else:
        assert isinstance(split, ColumnSplit)
        col = table.column(split.column).combine_chunks().cast(pa.string())
        which = pc.index_in(col, value_set=pa.array(SPLITS)).fill_null(-1).to_numpy(zero_copy_only=False)
        if (which < 0).any():
            raise DataError(
                f"split column {split.column!r} must hold only {list(SPLITS)}; {int((which < 0).sum())} rows do not"
            )
    out = {}
    for i, name in enumerate(SPLITS):
        out[name] = table.filter(pa.array(which == i))
    return out


@dataclass
class PreparedData:
    schema: DatasetSchema
    encoder: FeatureEncoder
    splits: dict[str, EncodedSplit]

    @property
    def train(self) -> EncodedSplit:
        return self.splits["train"]

    @property
    def valid(self) -> EncodedSplit:
        return self.splits["valid"]

    @property
    def test(self) -> EncodedSplit:
        return self.splits["test"]


def encode_split(table: pa.Table, encoder: FeatureEncoder) -> EncodedSplit:
    schema = encoder.schema
    y = table.column(schema.label).combine_chunks().cast(pa.float32()).to_numpy(zero_copy_only=False)
    tasks = None
    if schema.task_names:
        tasks = np.stack(
            [
                table.column(t).combine_chunks().cast(pa.float32()).to_numpy(zero_copy_only=False)
                for t in schema.task_names
            ],
            axis=1,
        )
    return EncodedSplit.from_numpy(encoder.transform(table), encoder.domain_ids(table), y, tasks)


def prepare(schema: DatasetSchema, base: Path, table: pa.Table | None = None) -> PreparedData:
    """Read, validate, split, fit encoders on train, encode every split once.

    Reading, validation, split assignment and the checks are those of `crossctr prepare`
    (`crossctr.data.prepare.read_in_memory`): the same input gets the same verdict and message.
    """
    from crossctr.data.prepare import read_in_memory

    parts, warnings = read_in_memory(schema, base, table)
    for msg in warnings:
        log.warning("%s", msg)
    encoder = FeatureEncoder(schema).fit(parts["train"])
    splits = {name: encode_split(part, encoder) for name, part in parts.items()}
    return PreparedData(schema, encoder, splits)
