"""Named datasets: turn a name such as `movielens-1m` into a dataset.yaml path, writing it once.

Experiments name their data (`dataset: movielens-1m`) instead of carrying paths. A name
is built from the public raw data under a data root (never bundled: the licences forbid
redistribution) into a cache folder keyed by name and seed, and reused from there; the
simulator needs no raw data. Anything that is not a name is taken as the path of a
dataset.yaml (or of a folder holding one).

Example:
    >>> resolve_dataset("movielens-100k", Path("cache"), Path("data"))  # doctest: +SKIP
    PosixPath('cache/movielens-100k-seed0-v1/dataset.yaml')
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crossctr.data.mind import write_mind_dataset
from crossctr.data.movielens import (
    SCHEMA_FILE,
    FeatureSet,
    Grouping,
    SplitKind,
    Version,
    write_movielens_dataset,
)
from crossctr.data.simulator import SimulatorConfig, write_simulated_dataset
from crossctr.schema import ConfigError

__all__ = ["DATASETS", "DATA_ROOT_ENV", "SIMULATOR_ROWS", "resolve_dataset", "describe"]

logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "CROSSCTR_DATA_ROOT"
SIMULATOR_ROWS = 300_000
# Bump when a loader changes what it writes, so old cache folders are not reused.
CACHE_VERSION = 2  # 2: out-of-fold MovieLens rates


@dataclass(frozen=True)
class _Entry:
    about: str
    folder: str | None  # sub-folder of the data root with the raw files; None: needs none
    write: Callable[[Path | None, Path, int], Path]  # (raw folder, out dir, seed) -> dataset.yaml


def _simulator(_: Path | None, out: Path, seed: int) -> Path:
    return write_simulated_dataset(out, SimulatorConfig(rows=SIMULATOR_ROWS, seed=seed))


def _movielens(
    version: Version, domains: Grouping, split: SplitKind, tasks: bool = False, features: FeatureSet = "full"
) -> Callable[[Path | None, Path, int], Path]:
    def write(root: Path | None, out: Path, seed: int) -> Path:
        assert root is not None  # the entry names a folder, so resolve_dataset passes its raw folder
        return write_movielens_dataset(
            root, out, version=version, domains=domains, split=split, seed=seed, tasks=tasks, features=features
        )

    return write


def _mind(root: Path | None, out: Path, seed: int) -> Path:
    assert root is not None  # the entry names a folder, so resolve_dataset passes its raw folder
    return write_mind_dataset(root, out, seed=seed)


_REGISTRY: dict[str, _Entry] = {
    "simulator": _Entry(f"simulated A/B/C e-commerce clicks, {SIMULATOR_ROWS:,} rows", None, _simulator),
    "movielens-1m": _Entry(
        "ML-1M, domains 18-44 / 45+ / under-18, random 80/10/10",
        "movielens-1m",
        _movielens("1m", "rich-poor", "random"),
    ),
    "movielens-1m-age3": _Entry(
        "ML-1M, domains under-25 / 25-34 / 35+, random 80/10/10", "movielens-1m", _movielens("1m", "age3", "random")
    ),
    "movielens-1m-bench": _Entry(
        "ML-1M rich-poor with the Scenario-Wise-Rec benchmark's 7 raw features, random 80/10/10",
        "movielens-1m",
        _movielens("1m", "rich-poor", "random", features="benchmark"),
    ),
    "movielens-1m-age3-bench": _Entry(
        "ML-1M age3 with the Scenario-Wise-Rec benchmark's 7 raw features, random 80/10/10",
        "movielens-1m",
        _movielens("1m", "age3", "random", features="benchmark"),
    ),
    "movielens-1m-time": _Entry(
        "ML-1M, domains 18-44 / 45+ / under-18, split by time 80/10/10",
        "movielens-1m",
        _movielens("1m", "rich-poor", "time"),
    ),
    "movielens-1m-mt": _Entry(
        "ML-1M rich-poor, random split, second label rating5 (rating == 5) for multi-task",
        "movielens-1m",
        _movielens("1m", "rich-poor", "random", tasks=True),
    ),
    "movielens-1m-age3-mt": _Entry(
        "ML-1M age3, random split, second label rating5 (rating == 5) for multi-task",
        "movielens-1m",
        _movielens("1m", "age3", "random", tasks=True),
    ),
    "movielens-100k": _Entry(
        "ML-100K, domains 18-44 / 45+ / under-18, random 80/10/10",
        "movielens-100k",
        _movielens("100k", "rich-poor", "random"),
    ),
    "movielens-100k-age3": _Entry(
        "ML-100K, domains under-25 / 25-34 / 35+, random 80/10/10",
        "movielens-100k",
        _movielens("100k", "age3", "random"),
    ),
    "mind": _Entry("MIND 8,000-row sample, domains news / lifestyle / sports / finance", "mind-sample", _mind),
}

DATASETS: tuple[str, ...] = tuple(_REGISTRY)


def describe() -> dict[str, str]:
    """Name -> one-line description of every registered dataset."""
    return {name: entry.about for name, entry in _REGISTRY.items()}


def _data_root(data_root: Path | None, name: str) -> Path:
    if data_root is not None:
        return Path(data_root)
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env)
    folders = sorted({e.folder for e in _REGISTRY.values() if e.folder})
    raise ConfigError(
        f"dataset {name!r} is built from public data that crossctr does not ship: pass --data-root "
        f"pointing at a folder holding {', '.join(f + '/' for f in folders)} (or set {DATA_ROOT_ENV})"
    )


def resolve_dataset(name_or_path: str, cache_dir: Path, data_root: Path | None = None, *, seed: int = 0) -> Path:
    """Return the dataset.yaml path of a registered name (writing it on first use) or of a path.

    Args:
        name_or_path: one of DATASETS, or the path of a dataset.yaml (or of its folder).
        cache_dir: where named datasets are written, one folder per name, seed and cache version.
        data_root: folder holding `movielens-1m/`, `movielens-100k/`, `mind-sample/`; defaults
            to the CROSSCTR_DATA_ROOT environment variable. The simulator needs none.
        seed: seed of the random split (and of the simulator); part of the cache key.

    Raises:
        ConfigError: an unknown name that is no file either, or a real dataset without a data root.
        DataError: the raw files are missing or corrupt (the message names the file).
    """
    entry = _REGISTRY.get(name_or_path)
    if entry is None:
        return _as_path(name_or_path)
    final = Path(cache_dir) / f"{name_or_path}-seed{seed}-v{CACHE_VERSION}"
    if (final / SCHEMA_FILE).is_file():
        return final / SCHEMA_FILE
    raw = None
    if entry.folder is not None:
        raw = _data_root(data_root, name_or_path) / entry.folder
        if not raw.is_dir():
            raise ConfigError(
                f"dataset {name_or_path!r} needs the folder {raw}, which does not exist; the data root "
                f"must hold {entry.folder}/ (pass --data-root or set {DATA_ROOT_ENV})"
            )
    # Write into a temporary sibling and rename, so an interrupted write is never taken as cached.
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("writing dataset %s (seed %d) into %s", name_or_path, seed, final)
    try:
        entry.write(raw, tmp, seed)
        try:
            tmp.rename(final)
        except OSError:
            if not (final / SCHEMA_FILE).is_file():  # not a concurrent writer that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / SCHEMA_FILE


def _as_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_dir() and (path / SCHEMA_FILE).is_file():
        return path / SCHEMA_FILE
    if path.is_file():
        return path
    raise ConfigError(
        f"dataset {name_or_path!r} is neither a registered name ({', '.join(DATASETS)}) nor an existing "
        f"dataset YAML file or folder holding {SCHEMA_FILE}"
    )
