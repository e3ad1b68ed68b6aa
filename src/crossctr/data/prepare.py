"""Bounded-memory preparation: dataset YAML + data files -> a folder of arrays training memory-maps.

    crossctr prepare dataset.yaml --out prepared/ --max-memory 2GB

The files (one CSV / Parquet file, a folder of shards or a glob) are streamed twice in record
batches, never loaded whole:

1. *fit*: every row is validated and assigned to train / valid / test (the same assignment
   as the in-memory `crossctr.data.dataset.prepare`); on training rows, categorical and
   multi-valued features count their values (Arrow value counts per batch, merged by an
   Arrow group-by whenever the pending counts outgrow the merged ones) and numeric features
   keep a **bottom-k sample**: every training row draws a uniform key from a seeded generator
   and each numeric column keeps the `reservoir` values (default 100,000) with the smallest
   keys, a uniform sample without replacement whatever the batch size. Quantile boundaries are
   taken from that sample (rank error about 1/sqrt(reservoir) = 0.3 %; exact when the train
   split has no more rows than the reservoir). Rows per split and domain are counted.
2. *encode*: batch by batch, into `.npy` files preallocated from those counts; each batch is
   written through a short-lived `np.memmap` window, so written pages never pile up in the
   process's resident memory.

Folder:
    prepared.json                manifest: format, cache key, inputs, rows per split and domain
    encoders.json                fitted encoders with the dataset schema (as in a run folder)
    {split}.features.npy         (N, S) int32 local ids; S = features, multi-valued ones take max_len
    {split}.domain.npy           (N,) int8 (int16 past 127 domains) domain ids
    {split}.label.npy            (N,) int8 0/1
    {split}.tasks.npy            (N, T) int8 extra labels 0/1, -1 where missing (multi-task datasets only)

Cache: the key hashes the prepare format version, the schema, the sampling settings and, for
every input file, its name, size, modification time and the SHA-256 of its first and last MiB
(not the full content: that would read the data a third time). Unchanged inputs reuse the
folder; `force=True` rebuilds. A change in the middle of a file that keeps its size and
modification time is not seen.

`load_prepared(folder)` returns the `PreparedData` training uses: features are torch tensors
over copy-on-write memory maps of the `.npy` files (zero-copy, paged in on demand), domain ids
and labels are widened in memory to the int64 / float32 the trainer indexes with (12 bytes a row).

Example:
    >>> options = PrepareOptions(max_memory=parse_memory("1GB"))  # doctest: +SKIP
    >>> result = prepare_dataset("data/dataset.yaml", "prepared", options)  # doctest: +SKIP
    >>> data = load_prepared("prepared")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import DTypeLike
from tqdm.auto import tqdm

from crossctr.data.encoders import CategoricalEncoder, FeatureEncoder, MultiEncoder, NumericBucketizer, new_encoder
from crossctr.data.io import (
    DataError,
    InputFile,
    check_input_files,
    iter_file_batches,
    resolve_input_files,
    validate_table,
)
from crossctr.files import DiskFullError, check_space, disk_full, free_bytes, human_bytes, remove_stale
from crossctr.schema import ColumnSplit, ConfigError, DatasetSchema, FeatureKind, RandomSplit, TimeSplit

if TYPE_CHECKING:
    from crossctr.data.dataset import PreparedData

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "PrepareOptions",
    "PrepareResult",
    "FitStats",
    "parse_memory",
    "prepare_dataset",
    "load_prepared",
    "is_prepared",
    "load_dataset",
    "fit_stream",
    "fit_batches",
    "scan_stream",
    "check_stats",
    "read_in_memory",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the folder layout or the encoding changes
MANIFEST = "prepared.json"
SPLITS = ("train", "valid", "test")
_EDGE = 1 << 20  # bytes hashed at each end of an input file for the cache key
_DEFAULT_SPARE = 2 << 30  # room above the current process when no bound is given
_BYTES_PER_ROW_FACTOR = 12  # working memory per raw row byte: Arrow batch, validated copy, casts, ids


@dataclass(frozen=True)
class PrepareOptions:
    """How `prepare_dataset` runs; only `reservoir` and `seed` change what it writes."""

    # Bytes of resident memory the whole process may use. None (the library default): 2 GiB
    # above what the process already holds, so a call from a large notebook or test process
    # is not refused; the CLI passes an explicit whole-process bound (--max-memory).
    max_memory: int | None = None
    batch_rows: int | None = None  # rows per record batch; None: derived from max_memory
    reservoir: int = 100_000  # numeric values sampled per column for quantiles (part of the cache key)
    seed: int = 0  # seed of the sample's keys (part of the cache key)
    allow_constant: bool = False  # keep a constant categorical / all-missing numeric feature (warn)
    allow_single_class: bool = False  # keep a split of a domain with one label class only (warn)
    force: bool = False  # rebuild even when the cache key matches
    progress: bool = True  # tqdm bars with rows/s on stderr


@dataclass
class PrepareResult:
    out: Path
    reused: bool  # True: the cache key matched, nothing was read
    rows: dict[str, int]  # per split
    seconds: float
    batch_rows: int


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_memory(text: str | int) -> int:
    """'2GB' -> 2_000_000_000, '512MiB' -> 536_870_912, 1000 -> 1000.

    Example:
        >>> parse_memory("1.5GB"), parse_memory("256MiB")
        (1500000000, 268435456)
    """
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"memory size {text!r} not understood; write e.g. 2GB, 1.5GB, 512MB or 4GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _rss() -> int:
    """Resident memory of this process now, in bytes."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux: the peak is an upper bound of the current value
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------------- streaming


class _Splitter:
    """Assigns rows to 0 train / 1 valid / 2 test batch by batch, exactly as `split_table` does
    for the whole table (a random split draws the same sequence of numbers)."""

    def __init__(self, schema: DatasetSchema) -> None:
        self.split = schema.split
        self.rng = np.random.default_rng(self.split.seed) if isinstance(self.split, RandomSplit) else None

    def __call__(self, table: pa.Table, source: str, row_offset: int) -> np.ndarray:
        split, n = self.split, table.num_rows
        if isinstance(split, RandomSplit):
            assert self.rng is not None
            u = self.rng.random(n)
            a, b = split.fractions[0], split.fractions[0] + split.fractions[1]
            return np.where(u < a, 0, np.where(u < b, 1, 2)).astype(np.int8)
        if split.column not in table.column_names:
            raise DataError(f"{source}: missing split column {split.column!r} (dataset YAML: split.column)")
        col = table.column(split.column).combine_chunks()
        if isinstance(split, TimeSplit):
            t = col.to_numpy(zero_copy_only=False).astype(np.float64)  # validate_table made it float
            if np.isnan(t).any():
                raise DataError(
                    f"{source}: split column {split.column!r} is missing on {_rows(np.isnan(t), row_offset)}"
                )
            return np.where(t < split.valid_start, 0, np.where(t < split.test_start, 1, 2)).astype(np.int8)
        assert isinstance(split, ColumnSplit)
        which = (
            pc.index_in(col.cast(pa.string()), value_set=pa.array(SPLITS)).fill_null(-1).to_numpy(zero_copy_only=False)
        )
        if (which < 0).any():
            bad = col.filter(pa.array(which < 0)).slice(0, 5).to_pylist()
            raise DataError(
                f"{source}: split column {split.column!r} must hold only {list(SPLITS)}; "
                f"{_rows(which < 0, row_offset)} hold {bad}"
            )
        return which.astype(np.int8)


def _rows(mask: np.ndarray, offset: int) -> str:
    idx = np.flatnonzero(mask)[:5] + offset + 1
    more = f" and {int(mask.sum()) - 5} more" if mask.sum() > 5 else ""
    return "rows " + ", ".join(str(i) for i in idx) + more


@dataclass
class _Batch:
    """One validated record batch with its split assignment."""

    source: str
    row_offset: int  # data rows of the file before this batch
    table: pa.Table
    which: np.ndarray  # (n,) int8 split ids
    domain: np.ndarray  # (n,) int64 domain ids


def scan_stream(
    schema: DatasetSchema,
    files: list[InputFile],
    batch_rows: int,
    desc: str = "",
    progress: bool = False,
    total: int | None = None,
) -> Iterator[_Batch]:
    """Validated batches of every file in order, each with its rows' split and domain ids."""
    splitter = _Splitter(schema)
    encoder = FeatureEncoder(schema)  # domain_ids needs no fitted state
    if total is None and all(f.rows is not None for f in files):
        total = sum(f.rows or 0 for f in files)
    with tqdm(total=total, unit="rows", unit_scale=True, desc=desc, disable=not progress, smoothing=0.1) as bar:
        for info in files:
            for first, raw in iter_file_batches(info, schema, batch_rows):
                if raw.num_rows == 0:
                    continue
                source = str(info.path)
                table = validate_table(raw, schema, source, row_offset=first)
                which = splitter(table, source, first)
                yield _Batch(source, first, table, which, encoder.domain_ids(table))
                bar.update(raw.num_rows)


class _Counts:
    """Value -> training count of one feature, kept as an Arrow table and merged by group-by."""

    def __init__(self) -> None:
        self.merged: pa.Table | None = None
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def add(self, values: pa.Array, counts: np.ndarray) -> None:
        self.pending.append(pa.table({"v": values.cast(pa.string()), "n": pa.array(counts.astype(np.int64))}))
        self.pending_rows += len(counts)
        if self.pending_rows > max(1 << 18, len(self.merged or [])):
            self.compact()

    def compact(self) -> None:
        parts = ([self.merged] if self.merged is not None else []) + self.pending
        if parts:
            t = pa.concat_tables(parts).group_by("v").aggregate([("n", "sum")])
            self.merged = pa.table({"v": t.column("v"), "n": t.column("n_sum")})
        self.pending, self.pending_rows = [], 0

    def result(self) -> tuple[pa.Array, np.ndarray]:
        self.compact()
        if self.merged is None:
            return pa.array([], pa.string()), np.zeros(0, np.int64)
        return self.merged.column("v").combine_chunks(), self.merged.column("n").to_numpy()

    @property
    def nbytes(self) -> int:
        return (self.merged.nbytes if self.merged is not None else 0) + sum(t.nbytes for t in self.pending)

    def __len__(self) -> int:
        self.compact()
        return 0 if self.merged is None else self.merged.num_rows


class _BottomK:
    """Uniform sample without replacement of a stream: the k values with the smallest keys."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.keys = np.zeros(0)
        self.values = np.zeros(0)

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        keys, values = np.concatenate([self.keys, keys]), np.concatenate([self.values, values])
        if len(keys) > self.k:
            keep = np.argpartition(keys, self.k - 1)[: self.k]
            keys, values = keys[keep], values[keep]
        self.keys, self.values = keys, values


@dataclass
class FitStats:
    """What the fit pass counted: enough for `crossctr inspect` and for prepare's checks."""

    rows: np.ndarray  # (3, n_domains) rows per split and domain
    positives: np.ndarray  # (3, n_domains)
    missing: dict[str, np.ndarray]  # feature -> (n_domains,) missing cells over all splits
    distinct: dict[str, int] = field(default_factory=dict)  # categorical / multi: distinct train values
    finite: dict[str, int] = field(default_factory=dict)  # numeric: finite train values
    truncated: dict[str, int] = field(default_factory=dict)  # multi: train cells with more than max_len values
    batch_rows: int = 0


def _row_bytes(files: list[InputFile]) -> float:
    """Raw bytes per row, from Parquet footers or CSV sizes (the larger over files)."""
    import pyarrow.parquet as pq

    best = 64.0
    for f in files:
        if f.kind == "parquet" and f.rows:
            meta = pq.ParquetFile(f.path).metadata
            size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            ncols = max(len(f.columns), 1)
            best = max(best, size / f.rows * len(f.read_columns) / ncols)
        elif f.kind == "csv":
            with open(f.path, "rb") as fh:
                head = fh.read(1 << 16)
            best = max(best, len(head) / max(head.count(b"\n"), 1))
    return best


def _spare_memory(options: PrepareOptions) -> int:
    """Bytes the bound leaves above what the process already holds; refuses a bound with no room."""
    if options.max_memory is None:
        return _DEFAULT_SPARE
    base = _rss()
    spare = options.max_memory - base
    if spare < 64 << 20:
        raise ConfigError(
            f"--max-memory {options.max_memory / 1e6:.0f} MB leaves no room: the process already uses "
            f"{base / 1e6:.0f} MB (interpreter, libraries and whatever the caller holds); "
            f"give at least {(base + (256 << 20)) / 1e6:.0f} MB"
        )
    return spare


def _batch_rows(files: list[InputFile], options: PrepareOptions) -> int:
    if options.batch_rows is not None:
        return max(1, options.batch_rows)
    spare = _spare_memory(options)
    # About a third of the spare memory for one batch's working set; the rest holds the
    # vocabulary counts and samples (checked as they grow) and slack for the allocator.
    rows = int(spare / 3 / (_row_bytes(files) * _BYTES_PER_ROW_FACTOR))
    return int(min(max(rows, 1024), 1 << 20))


def fit_stream(
    schema: DatasetSchema, files: list[InputFile], options: PrepareOptions, desc: str = "prepare 1/2 fit"
) -> tuple[FeatureEncoder, FitStats]:
    """Pass 1: validate every row, count rows, fit encoders on the training rows."""
    batch_rows = _batch_rows(files, options)
    batches = scan_stream(schema, files, batch_rows, desc, options.progress)  # desc: the progress bar's label
    return fit_batches(schema, batches, options, batch_rows, _spare_memory(options))


def fit_batches(
    schema: DatasetSchema,
    batches: Iterable[_Batch],
    options: PrepareOptions,
    batch_rows: int = 0,
    budget: int | None = None,
) -> tuple[FeatureEncoder, FitStats]:
    """Count rows, labels and missing cells and fit encoders on the training rows of validated
    batches: the statistics every check of `check_stats` reads, whether the batches are streamed
    (`crossctr prepare`) or held in memory (`crossctr train` on a dataset YAML). `budget`:
    bytes the value counts may take (None: no bound)."""
    n_dom = schema.n_domains
    rows = np.zeros((3, n_dom), np.int64)
    pos = np.zeros((3, n_dom), np.int64)
    missing = {f.name: np.zeros(n_dom, np.int64) for f in schema.features}
    counts = {f.name: _Counts() for f in schema.features if f.kind in (FeatureKind.CATEGORICAL, FeatureKind.MULTI)}
    samples = {
        f.name: _BottomK(options.reservoir)
        for f in schema.features
        if f.kind is FeatureKind.NUMERIC and f.boundaries is None
    }
    finite = {f.name: 0 for f in schema.features if f.kind is FeatureKind.NUMERIC}
    truncated = {f.name: 0 for f in schema.features if f.kind is FeatureKind.MULTI}
    multi = {f.name: new_encoder(f) for f in schema.features if f.kind is FeatureKind.MULTI}
    key_rng = np.random.default_rng(options.seed)
    for b in batches:
        label = b.table.column(schema.label).to_numpy(zero_copy_only=False)
        flat = b.which.astype(np.int64) * n_dom + b.domain
        rows += np.bincount(flat, minlength=3 * n_dom).reshape(3, n_dom)
        pos += np.bincount(flat, weights=label, minlength=3 * n_dom).astype(np.int64).reshape(3, n_dom)
        train = b.which == 0
        keys = key_rng.random(int(train.sum()))  # one key per training row, whatever the batch size
        train_tab = b.table.filter(pa.array(train)) if not train.all() else b.table
        for f in schema.features:
            if f.kind is FeatureKind.CROSSED:
                parts = [b.table.column(c).combine_chunks() for c in f.input_columns]
                miss = np.zeros(b.table.num_rows, bool)
                for col in parts:
                    miss |= _missing(col)
            else:
                miss = _missing(b.table.column(f.name).combine_chunks())
            missing[f.name] += np.bincount(b.domain[miss], minlength=n_dom)
            if f.name in counts:
                col = train_tab.column(f.name).combine_chunks()
                if f.kind is FeatureKind.MULTI:
                    enc = multi[f.name]
                    assert isinstance(enc, MultiEncoder)
                    values, cnt = enc.token_counts(col)
                    cells = pc.value_counts(col.drop_null()).flatten()
                    kept = pc.list_value_length(enc.tokens(cells[0])).to_numpy(zero_copy_only=False)
                    truncated[f.name] += int(cells[1].to_numpy()[kept > enc.max_len].sum())
                else:
                    vc = pc.value_counts(col.drop_null()).flatten()
                    values, cnt = vc[0], vc[1].to_numpy()
                counts[f.name].add(values, cnt)
            elif f.kind is FeatureKind.NUMERIC:
                x = train_tab.column(f.name).to_numpy(zero_copy_only=False).astype(np.float64)
                ok = np.isfinite(x)
                finite[f.name] += int(ok.sum())
                if f.name in samples:
                    samples[f.name].add(keys[ok], x[ok])
        held = sum(c.nbytes for c in counts.values())
        if budget is not None and held > budget * 0.5:
            worst = max(counts, key=lambda n: counts[n].nbytes)
            raise DataError(
                f"feature {worst!r} has {len(counts[worst]):,} distinct training values so far "
                f"({counts[worst].nbytes / 1e6:.0f} MB of counts), more than the memory bound "
                f"({budget / 1e9:.1f} GB spare) allows; declare it `kind: hashed` with `buckets:` "
                "in the dataset YAML, or raise --max-memory"
            )

    encoder = FeatureEncoder(schema)
    encoder.encoders_ = {}
    for f in schema.features:
        enc = new_encoder(f)
        if f.name in counts:
            values, cnt = counts[f.name].result()
            assert isinstance(enc, CategoricalEncoder | MultiEncoder)
            enc.fit_counts(values, cnt)
        elif isinstance(enc, NumericBucketizer):
            enc.fit(samples[f.name].values if f.name in samples else np.zeros(0))
        encoder.encoders_[f.name] = enc
    stats = FitStats(rows, pos, missing, {n: len(c) for n, c in counts.items()}, finite, truncated, batch_rows)
    return encoder, stats


def read_in_memory(
    schema: DatasetSchema,
    base: Path,
    table: pa.Table | None = None,
    options: PrepareOptions = PrepareOptions(progress=False),
) -> tuple[dict[str, pa.Table], list[str]]:
    """The validated train / valid / test tables of a dataset, read whole into memory through
    the reader, `validate_table`, split assignment and `check_stats` of `crossctr prepare`: the
    same verdict and the same message on every input. `table`: rows already in memory instead of
    the schema's files (a notebook's or a test's): checked by the same code, but a constant
    feature or a single-class split is a warning there, not an error. Returns the tables and the
    warnings the checks allowed.

    Raises:
        DataError: as `prepare_dataset` would, word for word.
    """
    source = str(schema.resolve_path(Path(base)))
    if table is None:
        files = check_input_files(resolve_input_files(schema, Path(base)), schema)
        batches = list(scan_stream(schema, files, 1 << 20))
    else:
        source = f"table for dataset {schema.name!r}"
        valid = validate_table(table, schema, source)
        splitter = _Splitter(schema)
        batches = [_Batch(source, 0, valid, splitter(valid, source, 0), FeatureEncoder(schema).domain_ids(valid))]
        options = PrepareOptions(progress=False, allow_constant=True, allow_single_class=True)
    encoder, stats = fit_batches(schema, batches, options)
    warnings = check_stats(schema, encoder, stats, options, source)
    parts = {}
    for i, name in enumerate(SPLITS):
        pieces = [b.table.filter(pa.array(b.which == i)) for b in batches]
        parts[name] = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
    return parts, warnings


def _missing(col: pa.Array) -> np.ndarray:
    miss = col.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_floating(col.type):
        miss |= np.isnan(col.to_numpy(zero_copy_only=False))
    return miss


def check_stats(
    schema: DatasetSchema, encoder: FeatureEncoder, stats: FitStats, options: PrepareOptions, source: str = ""
) -> list[str]:
    """Problems the fit pass found, as messages. Hard ones raise DataError; the ones a flag
    downgrades are raised unless allowed, and returned (to be logged) when allowed.
    `source` (the data path) starts every message."""
    doms = schema.domain.values
    at = f"{source}: " if source else ""
    for s, name in enumerate(SPLITS):
        if stats.rows[s].sum() == 0:
            raise DataError(f"{at}split {name!r} is empty; check the dataset's split settings ({schema.split})")
    absent = [d for d, n in zip(doms, stats.rows[0], strict=False) if n == 0]
    if absent:
        raise DataError(f"{at}domain(s) {absent} have no training rows; remove them from domain.values or add data")
    warnings: list[str] = []
    constant = []
    for f in schema.features:
        if f.kind is FeatureKind.NUMERIC and f.boundaries is None and stats.finite.get(f.name, 0) == 0:
            constant.append(f"numeric column {f.name!r} has no number in the training rows (all missing or NaN)")
        if f.kind in (FeatureKind.CATEGORICAL, FeatureKind.MULTI) and stats.distinct.get(f.name, 0) <= 1:
            enc = encoder.encoders_[f.name]
            assert isinstance(enc, CategoricalEncoder | MultiEncoder)  # new_encoder's classes for these kinds
            vocab = enc.vocab_
            if vocab or stats.distinct.get(f.name, 0):
                constant.append(
                    f"column {f.name!r} ({f.kind.value}) holds a single value {vocab[:1]} in the training rows"
                )
            else:
                constant.append(
                    f"column {f.name!r} ({f.kind.value}) has no value in the training rows (all missing or empty)"
                )
    _refuse_or_warn(
        constant,
        at,
        "the feature carries no information",
        options.allow_constant or bool(schema.allow_constant_features),
        "Drop it from the dataset YAML, fix the data, or keep it with `allow_constant_features: true` in the "
        "dataset YAML (or `crossctr prepare --allow-constant-features`).",
        warnings,
    )
    single = []
    for s, name in enumerate(SPLITS):
        for d, dom in enumerate(doms):
            n, p = int(stats.rows[s, d]), int(stats.positives[s, d])
            if n > 0 and (p == 0 or p == n):
                single.append(
                    f"domain {dom!r} has {'no positive' if p == 0 else 'no negative'} "
                    f"labels in its {name} split ({n} rows)"
                )
    _refuse_or_warn(
        single,
        at,
        "AUC is undefined there and the domain cannot be evaluated",
        options.allow_single_class or bool(schema.allow_single_class),
        "Change the split, add data, or keep it with `allow_single_class: true` in the dataset YAML "
        "(or `crossctr prepare --allow-single-class`).",
        warnings,
    )
    return warnings


def _refuse_or_warn(problems: list[str], at: str, why: str, allowed: bool, fix: str, warnings: list[str]) -> None:
    """A DataError naming every problem, or (when the user's flag allows it) one more warning."""
    if not problems:
        return
    msg = at + "; ".join(problems) + ": " + why
    if not allowed:
        raise DataError(f"{msg}. {fix}")
    warnings.append(msg)


# ----------------------------------------------------------------------------------- writing


def _file_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(_EDGE))
        if st.st_size > _EDGE:
            fh.seek(max(st.st_size - _EDGE, _EDGE))
            h.update(fh.read(_EDGE))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "edges_sha256": h.hexdigest()}


def cache_key(
    schema: DatasetSchema, files: list[Any], options: PrepareOptions, base: Path
) -> tuple[str, dict[str, Any]]:
    """Content key of a prepared folder and the fingerprints (by path relative to `base`) it is made of."""
    paths = [Path(getattr(p, "path", p)) for p in files]  # SourceFile or Path
    prints = {os.path.relpath(p, base): _file_fingerprint(p) for p in paths}
    blob = json.dumps(
        {
            "format": FORMAT_VERSION,
            "schema": schema.model_dump(mode="json"),
            "reservoir": options.reservoir,
            "seed": options.seed,
            "files": [{"name": k, **v} for k, v in prints.items()],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest(), prints


def is_prepared(path: str | Path) -> bool:
    """True when `path` is a folder written by `prepare_dataset`."""
    return (Path(path) / MANIFEST).is_file()


def _reusable(out: Path, key: str) -> bool:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("format") != FORMAT_VERSION or manifest.get("cache_key") != key:
        return False
    return (
        all((out / f"{s}.{part}.npy").is_file() for s in SPLITS for part in ("features", "domain", "label"))
        and (out / "encoders.json").is_file()
    )


class _NpyWriter:
    """A .npy file of a known shape filled row block by row block with positioned writes.

    Plain writes, not a memory map: on a full disk a write fails with ENOSPC, which is caught
    and reported, where storing into a memory-mapped page the disk cannot back kills the process
    with SIGBUS. Written pages sit in the kernel's page cache, not in this process's memory.
    """

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)  # padded to 64 bytes: the data is aligned for memory maps
            self.offset = f.tell()
        self.row_bytes = self.dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        self.cursor = 0

    @staticmethod
    def nbytes(dtype: DTypeLike, shape: tuple[int, ...]) -> int:
        """File size: the 128-byte header (more for very long shapes) plus the data."""
        return 128 + np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64))

    def write(self, block: np.ndarray) -> None:
        n = len(block)
        if n == 0:
            return
        if self.cursor + n > self.shape[0]:
            raise DataError(
                f"{self.path}: more rows than counted in the first pass; did an input file change while preparing?"
            )
        data = np.ascontiguousarray(block, dtype=self.dtype).data.cast("B")
        with open(self.path, "r+b", buffering=0) as f:
            f.seek(self.offset + self.cursor * self.row_bytes)
            while data:
                data = data[f.write(data) :]  # a raw write may take part of the buffer
        self.cursor += n


def _domain_dtype(n: int) -> np.dtype:
    if n <= 127:
        return np.dtype(np.int8)
    if n <= 32767:
        return np.dtype(np.int16)
    raise ConfigError(f"{n} domains: at most 32,767 are supported")


def prepare_dataset(
    dataset_yaml: str | Path, out: str | Path, options: PrepareOptions = PrepareOptions()
) -> PrepareResult:
    """Stream a dataset's files into a prepared folder (see the module docstring).

    Raises:
        ConfigError: the YAML is invalid, or `out` is an unrelated non-empty folder.
        DataError: the data does not fit the schema (the message names file, column and rows).
    """
    t0 = time.perf_counter()
    dataset_yaml, out = Path(dataset_yaml), Path(out)
    # Temp folders of earlier runs killed before they could clean up (SIGKILL, power loss):
    # `.OUT.tmp-<pid>` of processes no longer running. Never read, only removed.
    remove_stale(out.absolute().parent, f".{out.name}.tmp-")
    schema = DatasetSchema.from_yaml(dataset_yaml)
    paths = resolve_input_files(schema, dataset_yaml.parent)
    key, prints = cache_key(schema, paths, options, dataset_yaml.parent)
    if not options.force and _reusable(out, key):
        manifest = json.loads((out / MANIFEST).read_text())
        log.info("%s: inputs unchanged (cache key %s...), reusing the prepared folder", out, key[:12])
        return PrepareResult(out, True, manifest["rows"], time.perf_counter() - t0, manifest.get("batch_rows", 0))
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_prepared(out))):
        raise ConfigError(f"{out}: exists and is not a prepared folder; choose another --out (nothing was overwritten)")
    files = check_input_files(paths, schema)

    encoder, stats = fit_stream(schema, files, options)
    for msg in check_stats(schema, encoder, stats, options, str(schema.resolve_path(dataset_yaml.parent))):
        log.warning("%s", msg)
    n_rows = stats.rows.sum(axis=1)

    ddt = _domain_dtype(schema.n_domains)
    n_tasks = len(schema.task_names)
    shapes: list[tuple[tuple[int, ...], DTypeLike]] = (
        [((int(n), schema.n_slots), np.int32) for n in n_rows]
        + [((int(n),), ddt) for n in n_rows]
        + [((int(n),), np.int8) for n in n_rows]
    )
    shapes += [((int(n), n_tasks), np.int8) for n in n_rows] if n_tasks else []
    needed = sum(_NpyWriter.nbytes(dt, shape) for shape, dt in shapes) + (1 << 20)  # + encoders.json and the manifest
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    check_space(
        tmp.parent, needed, f"{out.name}'s arrays ({int(n_rows.sum()):,} rows)"
    )  # refuse before writing anything
    free = free_bytes(tmp.parent)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        writers = {
            s: (
                _NpyWriter(tmp / f"{s}.features.npy", np.dtype(np.int32), (int(n_rows[i]), schema.n_slots)),
                _NpyWriter(tmp / f"{s}.domain.npy", ddt, (int(n_rows[i]),)),
                _NpyWriter(tmp / f"{s}.label.npy", np.dtype(np.int8), (int(n_rows[i]),)),
            )
            for i, s in enumerate(SPLITS)
        }
        task_writers = (
            {
                s: _NpyWriter(tmp / f"{s}.tasks.npy", np.dtype(np.int8), (int(n_rows[i]), n_tasks))
                for i, s in enumerate(SPLITS)
            }
            if n_tasks
            else {}
        )
        for b in scan_stream(
            schema, files, stats.batch_rows, "prepare 2/2 encode", options.progress, total=int(n_rows.sum())
        ):
            x = encoder.transform(b.table)  # (n, S) int32
            y = b.table.column(schema.label).to_numpy(zero_copy_only=False).astype(np.int8)
            t = None
            if n_tasks:
                t = np.stack([b.table.column(c).to_numpy(zero_copy_only=False) for c in schema.task_names], axis=1)
                t = np.where(np.isnan(t), -1, t).astype(np.int8)
            for i, s in enumerate(SPLITS):
                rows = b.which == i
                if rows.any():
                    fx, fd, fy = writers[s]
                    fx.write(x[rows])
                    fd.write(b.domain[rows].astype(ddt))
                    fy.write(y[rows])
                    if t is not None:
                        task_writers[s].write(t[rows])
        for s, (fx, _, _) in writers.items():
            if fx.cursor != fx.shape[0]:
                raise DataError(
                    f"split {s!r}: {fx.cursor} rows encoded but {fx.shape[0]} "
                    "counted; did an input file change while preparing?"
                )
        encoder.save(tmp / "encoders.json")
        rows_by = {s: int(n) for s, n in zip(SPLITS, n_rows, strict=False)}
        manifest = {
            "format": FORMAT_VERSION,
            "cache_key": key,
            "dataset": schema.name,
            "inputs": prints,
            "rows": rows_by,
            "rows_per_domain": {
                s: dict(zip(schema.domain.values, stats.rows[i].tolist(), strict=False)) for i, s in enumerate(SPLITS)
            },
            "positives_per_domain": {
                s: dict(zip(schema.domain.values, stats.positives[i].tolist(), strict=False))
                for i, s in enumerate(SPLITS)
            },
            "slots": encoder.slots,
            "cardinalities": list(encoder.cardinalities),
            "dtypes": {
                "features": "int32",
                "domain": str(ddt),
                "label": "int8",
                **({"tasks": "int8"} if n_tasks else {}),
            },
            "tasks": schema.task_names,
            "quantiles": {"method": "bottom-k uniform sample", "reservoir": options.reservoir, "seed": options.seed},
            "batch_rows": stats.batch_rows,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)  # an empty folder or an outdated prepared folder (checked above)
        tmp.rename(out)
    except OSError as err:
        if not disk_full(err):
            raise
        raise DiskFullError(
            f"{tmp.parent}: the disk filled while writing {out.name}'s arrays ({err.strerror or err}): they need "
            f"{human_bytes(needed)} ({needed:,} bytes), {human_bytes(free)} were free when writing began; free space "
            "or choose another --out (the partial folder was removed)"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # whatever happened, nothing half-written stays
    seconds = time.perf_counter() - t0
    log.info(
        "prepared %s rows into %s in %.1f s (%.0f rows/s per pass)",
        f"{int(n_rows.sum()):,}",
        out,
        seconds,
        2 * n_rows.sum() / max(seconds, 1e-9),
    )
    return PrepareResult(out, False, rows_by, seconds, stats.batch_rows)


# ----------------------------------------------------------------------------------- loading


def _load_npy(path: Path, mode: Literal["r", "c"]) -> np.ndarray:
    """A memory-mapped array of a prepared folder; a pickled, truncated or foreign file is refused
    with a ConfigError (never unpickled: np.load's allow_pickle stays False)."""
    try:
        arr = np.load(path, mmap_mode=mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # ValueError: pickled objects, a bad header, a short file
        raise ConfigError(
            f"{path}: not an array `crossctr prepare` writes ({err}); run `crossctr prepare --force`"
        ) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.hasobject:
        raise ConfigError(f"{path}: not a numeric array; run `crossctr prepare --force`")
    return arr


def load_prepared(folder: str | Path) -> PreparedData:
    """The PreparedData of a prepared folder: features memory-mapped (copy-on-write), zero-copy.

    Raises:
        ConfigError: the folder is not a prepared folder or was written by another format version.
    """
    import torch

    from crossctr.data.dataset import EncodedSplit, PreparedData

    folder = Path(folder)
    if not is_prepared(folder):
        raise ConfigError(
            f"{folder}: not a prepared folder (no {MANIFEST}); run `crossctr prepare DATASET_YAML --out {folder}`"
        )
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT_VERSION:
        raise ConfigError(
            f"{folder}: prepared with format {manifest.get('format')}, this "
            f"crossctr reads {FORMAT_VERSION}; run `crossctr prepare` again"
        )
    encoder = FeatureEncoder.load(folder / "encoders.json")
    splits = {}
    for s in SPLITS:
        # "c" (copy-on-write): a writable array for torch, and the file can never be modified.
        x = _load_npy(folder / f"{s}.features.npy", "c")
        d = _load_npy(folder / f"{s}.domain.npy", "r").astype(np.int64)
        y = _load_npy(folder / f"{s}.label.npy", "r").astype(np.float32)
        if x.ndim != 2 or x.shape[1] != encoder.schema.n_slots or not len(x) == len(d) == len(y):
            raise ConfigError(
                f"{folder}: {s} arrays do not match the encoders ({x.shape}, "
                f"{d.shape}, {y.shape}); run `crossctr prepare --force`"
            )
        tasks = None
        if encoder.schema.task_names:
            t = _load_npy(folder / f"{s}.tasks.npy", "r")
            if t.shape != (len(y), len(encoder.schema.task_names)):
                raise ConfigError(
                    f"{folder}: {s}.tasks.npy has shape {t.shape}, expected "
                    f"{(len(y), len(encoder.schema.task_names))}; run `crossctr prepare --force`"
                )
            tasks = torch.from_numpy(np.where(t < 0, np.float32("nan"), t.astype(np.float32)))
        splits[s] = EncodedSplit(torch.from_numpy(x), torch.from_numpy(d), torch.from_numpy(y), tasks)
    return PreparedData(encoder.schema, encoder, splits)


def load_dataset(path: str | Path) -> PreparedData:
    """A prepared folder (memory-mapped) or a dataset YAML (read and encoded in memory)."""
    from crossctr.data.dataset import prepare

    path = Path(path)
    if is_prepared(path):
        return load_prepared(path)
    return prepare(DatasetSchema.from_yaml(path), path.parent)
