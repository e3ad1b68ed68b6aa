"""Which rows a run trained, validated and tested on: recorded with the run, matched later.

A run folder's `split.json` records, for the split the run used, the rows per split and
domain, an order-sensitive digest of each split's encoded rows, and a hashed sample of the
training and validation rows. With it, `crossctr evaluate RUN --data FILE` can tell

    FILE is the run's test (or valid, or train) split itself      -> label the table so
    FILE is the training file: re-split it, keep the test rows     -> "test", those rows only
    FILE is another file                                           -> its name; warn when it
                                                                      holds seen rows

and `crossctr split RUN --out DIR` can write the raw valid / test rows, checked against the
record. A row is identified by its encoded features, domain and label (a 64-bit hash), so two
raw rows that encode alike count as one: the counts of seen rows are estimates, the digests
are exact for the same rows in the same order.

Example:
    >>> import numpy as np, torch
    >>> from crossctr.data.dataset import EncodedSplit
    >>> s = EncodedSplit(
    ...     torch.tensor([[1, 2], [3, 4]], dtype=torch.int32), torch.tensor([0, 1]), torch.tensor([1.0, 0.0])
    ... )
    >>> row_hashes(s).shape
    (2,)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossctr.data.dataset import SPLITS, EncodedSplit, PreparedData, split_table
from crossctr.data.io import DataError
from crossctr.inference import atomic_write

__all__ = [
    "SPLIT_FILE",
    "row_hashes",
    "digest",
    "seen_rows",
    "split_record",
    "write_split_record",
    "load_split_record",
    "Located",
    "locate_rows",
    "keep_domains",
]

SPLIT_FILE = "split.json"
FORMAT = 1
# Seen-row samples hold at most about this many hashes per split (a power-of-two share of the
# rows), so split.json stays well under a megabyte whatever the data size.
SAMPLE_ROWS = 8192
_CHUNK = 1 << 20  # rows hashed at a time (bounds memory on memory-mapped data)
_PRIME = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    h = (h ^ (h >> np.uint64(30))) * _MIX1
    h = (h ^ (h >> np.uint64(27))) * _MIX2
    return h ^ (h >> np.uint64(31))


def _hash_chunks(split: EncodedSplit) -> Iterator[np.ndarray]:
    """Row hashes of `split`, _CHUNK rows at a time (a memory-mapped split is never loaded whole)."""
    n = len(split)
    with np.errstate(over="ignore"):
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            x = np.asarray(split.features[start:stop].numpy(), dtype=np.int64).astype(np.uint64)  # (n, S)
            h = _mix(split.domain[start:stop].numpy().astype(np.uint64) + _PRIME)  # (n,)
            h = _mix(h ^ (split.label[start:stop].numpy().astype(np.uint64) + _PRIME))
            for j in range(x.shape[1]):
                h = _mix(h ^ (x[:, j] + _PRIME))
            yield h


def row_hashes(split: EncodedSplit) -> np.ndarray:
    """(N,) uint64: one hash per row of its encoded features, domain and label."""
    parts = list(_hash_chunks(split))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def digest(hashes: np.ndarray) -> str:
    """Order-sensitive digest of a split's row hashes."""
    return hashlib.sha256(np.ascontiguousarray(hashes, dtype="<u8").tobytes()).hexdigest()[:32]


def _every(n: int) -> int:
    """Sampling period of a split of n rows: a power of two that keeps about SAMPLE_ROWS hashes."""
    return 1 << max(0, math.ceil(math.log2(max(n, 1) / SAMPLE_ROWS)))


def _summary(split: EncodedSplit, every: int) -> tuple[str, np.ndarray]:
    """(digest, sampled hashes) of a split in one streaming pass: the digest equals digest(row_hashes(split))."""
    sha, kept = hashlib.sha256(), []
    for h in _hash_chunks(split):
        sha.update(np.ascontiguousarray(h, dtype="<u8").tobytes())
        kept.append(h[h % np.uint64(every) == 0])
    return sha.hexdigest()[:32], np.unique(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.uint64)


def split_record(data: PreparedData) -> dict[str, Any]:
    """What `split.json` holds for the data a run used (after any `domains:` restriction)."""
    names = list(data.schema.domain.values)
    record: dict[str, Any] = {
        "format": FORMAT,
        "split": data.schema.split.model_dump(mode="json"),
        "domains": names,
        "rows": {},
        "digest": {},
        "seen_sample": {},
        "about": "rows per split and domain; digest = sha256 of the split's encoded row hashes in order; "
        "seen_sample = hashes of train / valid rows divisible by `every`; "
        "test_seen_share = share of test rows found in them (crossctr.evaluation.split)",
    }
    for name in SPLITS:
        part = data.splits[name]
        every = _every(len(part))
        record["rows"][name] = dict(zip(names, part.domain_counts(len(names)), strict=False))
        record["digest"][name], kept = _summary(part, every)
        if name != "test":
            record["seen_sample"][name] = {"every": every, "hashes": [f"{int(h):016x}" for h in kept]}
    # Rows that encode alike are one row to the model, so even the test split "holds" some
    # training rows (a user, item and bucket seen with the same label): the share a file of
    # new rows may show without being a leak.
    test = data.splits["test"]
    record["test_seen_share"] = {
        s: sum(seen_rows(h, sample) for h in _hash_chunks(test)) / max(len(test), 1)
        for s, sample in record["seen_sample"].items()
    }
    return record


def seen_rows(hashes: np.ndarray, sample: dict[str, Any]) -> int:
    """Estimated rows among `hashes` that are in the sampled split (sample hits times the sampling period)."""
    every = np.uint64(sample["every"])
    known = np.array([int(h, 16) for h in sample["hashes"]], dtype=np.uint64)
    return int(np.isin(hashes[hashes % every == 0], known).sum()) * int(sample["every"])


def write_split_record(out: str | Path, data: PreparedData) -> Path:
    path = Path(out) / SPLIT_FILE
    atomic_write(path, json.dumps(split_record(data), indent=1).encode())
    return path


def load_split_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's split record, or None for a run written before crossctr recorded it."""
    path = Path(run_dir) / SPLIT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def keep_domains(table: pa.Table, column: str, domains: list[str]) -> tuple[pa.Table, np.ndarray, dict[str, int]]:
    """Rows of `table` whose domain is one of `domains`: (kept rows, (N,) bool mask, dropped rows per other domain)."""
    if column not in table.column_names:
        raise DataError(f"missing the domain column {column!r}; the table has {table.column_names}")
    try:
        dom = table.column(column).combine_chunks().cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return table, np.ones(table.num_rows, dtype=bool), {}  # let validation name the problem
    keep = pc.fill_null(pc.is_in(dom, value_set=pa.array(domains)), False).to_numpy(zero_copy_only=False)
    if keep.all():
        return table, keep, {}
    dropped = dom.filter(pa.array(~keep)).fill_null("<missing>")
    counts = {str(d["values"]): int(d["counts"]) for d in pc.value_counts(dropped).to_pylist()}
    return table.filter(pa.array(keep)), keep, dict(sorted(counts.items()))


@dataclass
class Located:
    """Where the rows of a labelled file stand with respect to a run's split."""

    # "test" / "valid" / "train": the file is that split of the run, or (resplit) holds it;
    # "file": another file, scored whole.
    kind: str
    rows: np.ndarray  # (n,) positions, in the encoded file, of the rows to score
    resplit: bool = False  # the file is the training file; `rows` are its `kind` split
    seen: dict[str, int] = field(default_factory=dict)  # split -> estimated rows of the file the run saw there
    usual: dict[str, float] = field(
        default_factory=dict
    )  # split -> as many as the run's own test split holds, pro rata
    checked: bool = True  # False: the run recorded no split, nothing could be matched


def locate_rows(
    raw: pa.Table, encoded: EncodedSplit, kept: np.ndarray, record: dict[str, Any] | None, schema: Any
) -> Located:
    """Match a labelled file against the run's recorded split.

    Args:
        raw: the file as read (every row, before dropping other domains), for re-splitting.
        encoded: the file's rows of the run's domains, encoded with the run's encoder.
        kept: (len(raw),) bool, which raw rows `encoded` holds.
        record: the run's split record (None: an old run; nothing is matched).
        schema: the run's dataset schema (its `split` re-splits the file).
    """
    every_row = np.arange(len(encoded))
    if record is None:
        return Located("file", every_row, checked=False)
    hashes = row_hashes(encoded)
    whole = digest(hashes)
    for name in ("test", "valid", "train"):
        if whole == record["digest"][name]:
            return Located(name, every_row)
    which = _split_ids(raw, schema)
    if which is not None:
        which = which[kept]  # (n,) split id of every encoded row
        parts = {name: np.flatnonzero(which == i) for i, name in enumerate(SPLITS)}
        if all(digest(hashes[parts[n]]) == record["digest"][n] for n in ("train", "test")):
            return Located("test", parts["test"], resplit=True)
    seen, usual = {}, {}
    for name, sample in record["seen_sample"].items():
        seen[name] = seen_rows(hashes, sample)
        usual[name] = record["test_seen_share"][name] * len(hashes)
    return Located("file", every_row, seen=seen, usual=usual)


def _split_ids(raw: pa.Table, schema: Any) -> np.ndarray | None:
    """(N,) 0 train / 1 valid / 2 test for every raw row, by the schema's split; None when the
    file cannot be split that way (no split column, say)."""
    pos = "__crossctr_row__"
    try:
        parts = split_table(raw.append_column(pos, pa.array(np.arange(raw.num_rows))), schema)
    except (DataError, KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    which = np.full(raw.num_rows, -1, dtype=np.int8)
    for i, name in enumerate(SPLITS):
        which[parts[name].column(pos).to_numpy()] = i
    return which
