"""MIND sample loader (domains and positives as SOURCE.md lists them, stratified split) and the
dataset registry that turns names such as `mind` into cached dataset folders.

The MIND sample is read from $CROSSCTR_DATA_ROOT or `shared/data` next to the repository
(its licence forbids bundling it); tests that need it skip when it is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossctr.data import registry
from crossctr.data.dataset import prepare
from crossctr.data.io import DataError
from crossctr.data.mind import MIND_DOMAINS, load_mind_sample, stratified_split, write_mind_dataset
from crossctr.data.registry import CACHE_VERSION, DATASETS, resolve_dataset
from crossctr.schema import ConfigError, DatasetSchema

# <workspace>/main/tests/data/this_file -> <workspace>/shared/data
DATA_ROOT = Path(os.environ.get("CROSSCTR_DATA_ROOT") or Path(__file__).resolve().parents[3] / "shared" / "data")
MIND = DATA_ROOT / "mind-sample"

# Rows and positives per domain, from mind-sample/SOURCE.md.
EXPECTED = {"news": (3_742, 163), "lifestyle": (1_565, 60), "sports": (1_428, 84), "finance": (1_265, 56)}


@pytest.fixture(scope="module")
def mind_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MIND.is_dir():
        pytest.skip(f"mind-sample not found under {DATA_ROOT}; set CROSSCTR_DATA_ROOT to the folder holding it")
    return write_mind_dataset(MIND, tmp_path_factory.mktemp("mind"), seed=0)


def _table(path: Path) -> pa.Table:
    return pq.read_table(path.parent / "data.parquet")


def test_mind_domains_and_positives_match_source(mind_yaml: Path) -> None:
    table = _table(mind_yaml)
    dom, label = table.column("domain").to_numpy(zero_copy_only=False), table.column("label").to_numpy()
    assert {d: (int((dom == d).sum()), int(label[dom == d].sum())) for d in MIND_DOMAINS} == EXPECTED
    assert table.num_rows == 8_000 and int(label.sum()) == 363
    stats = json.loads((mind_yaml.parent / "stats.json").read_text())
    assert {d: (s["rows"], s["positives"]) for d, s in stats["per_domain"].items()} == EXPECTED


def test_mind_split_is_stratified_by_domain_and_label(mind_yaml: Path) -> None:
    table = _table(mind_yaml)
    dom, label = table.column("domain").to_numpy(zero_copy_only=False), table.column("label").to_numpy()
    split = table.column("split").to_numpy(zero_copy_only=False)
    for d in MIND_DOMAINS:
        for y in (0, 1):
            cell = (dom == d) & (label == y)
            shares = [(split[cell] == s).mean() for s in ("train", "valid", "test")]
            assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.02), (d, y, shares)
            assert all((split[cell] == s).any() for s in ("train", "valid", "test"))  # positives in every split


def test_mind_prepares(mind_yaml: Path) -> None:
    schema = DatasetSchema.from_yaml(mind_yaml)
    assert schema.domain.values == MIND_DOMAINS
    assert schema.feature_names == ["User_ID", "News_ID", "SubCategory"]
    data = prepare(schema, mind_yaml.parent)
    assert sum(len(s) for s in data.splits.values()) == 8_000
    assert all(min(s.domain_counts(4)) > 0 for s in data.splits.values())


def test_stratified_split_is_seeded() -> None:
    strata = np.repeat(np.arange(3), [100, 50, 10])
    a, b, c = stratified_split(strata, 0), stratified_split(strata, 0), stratified_split(strata, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert [np.bincount(a[strata == k], minlength=3).tolist() for k in range(3)] == [
        [80, 10, 10],
        [40, 5, 5],
        [8, 1, 1],
    ]


def test_mind_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mind_sample\.csv: file not found"):
        load_mind_sample(tmp_path)
    bad = tmp_path / "mind_sample.csv"
    bad.write_text("User_ID,News_ID,label,Category,SubCategory\nU1,N1,0,weather,rain\nU2,N2,1,news,us\n")
    with pytest.raises(DataError, match=r"mind_sample\.csv: column 'Category' holds \['weather'\]"):
        load_mind_sample(tmp_path)
    bad.write_text("User_ID,News_ID,label,Category,SubCategory\nU1,N1,2,news,us\n")
    with pytest.raises(DataError, match=r"column 'label' must hold only 0 and 1"):
        load_mind_sample(bad)


# ---------------------------------------------------------------------------------------------
# Registry.


def test_registry_names() -> None:
    assert DATASETS == (
        "simulator",
        "movielens-1m",
        "movielens-1m-age3",
        "movielens-1m-bench",
        "movielens-1m-age3-bench",
        "movielens-1m-time",
        "movielens-1m-mt",
        "movielens-1m-age3-mt",
        "movielens-100k",
        "movielens-100k-age3",
        "mind",
    )
    assert set(registry.describe()) == set(DATASETS)


def test_registry_writes_once_then_reuses(mind_yaml: Path, tmp_path: Path) -> None:
    path = resolve_dataset("mind", tmp_path, DATA_ROOT, seed=0)
    assert path.name == "dataset.yaml" and DatasetSchema.from_yaml(path).name == "mind-sample"
    assert (path.parent / "data.parquet").read_bytes() == (mind_yaml.parent / "data.parquet").read_bytes()
    written = path.stat().st_mtime_ns
    assert resolve_dataset("mind", tmp_path, tmp_path / "no-data", seed=0) == path  # cached: no data read
    assert path.stat().st_mtime_ns == written
    other = resolve_dataset("mind", tmp_path, DATA_ROOT, seed=1)
    assert other != path and not _table(other).column("split").equals(_table(path).column("split"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.parent.name, other.parent.name])  # no temp left


def test_registry_data_root_from_environment(mind_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.DATA_ROOT_ENV, str(DATA_ROOT))
    assert resolve_dataset("mind", tmp_path).is_file()


def test_registry_without_data_root_says_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.DATA_ROOT_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"--data-root.*movielens-1m/"):
        resolve_dataset("movielens-1m", tmp_path)
    with pytest.raises(ConfigError, match=r"needs the folder .*movielens-100k"):
        resolve_dataset("movielens-100k", tmp_path, tmp_path / "empty")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_registry_paths_and_unknown_names(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    yaml_path = tiny_dataset_dir / "dataset.yaml"
    assert resolve_dataset(str(yaml_path), tmp_path) == yaml_path
    assert resolve_dataset(str(tiny_dataset_dir), tmp_path) == yaml_path
    with pytest.raises(ConfigError, match=r"'movielens-20m' is neither a registered name \(simulator, movielens-1m"):
        resolve_dataset("movielens-20m", tmp_path)


def test_registry_simulator_needs_no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "SIMULATOR_ROWS", 40_000)  # the real default, 300,000 rows, is slow for a unit test
    path = resolve_dataset("simulator", tmp_path, None, seed=2)
    assert DatasetSchema.from_yaml(path).domain.values == ("A", "B", "C")
    assert path.parent.name == f"simulator-seed2-v{CACHE_VERSION}"
