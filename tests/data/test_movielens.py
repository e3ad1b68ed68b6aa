"""MovieLens loaders: the domain splits match the row counts published in the data's SOURCE.md,
statistic features see the training rows only, and a written folder runs through `prepare`.

The real data is never bundled (GroupLens forbids redistribution): it is read from
$CROSSCTR_DATA_ROOT or from `shared/data` next to the repository, and the tests that
need it skip when it is absent. The error-path tests build tiny fake folders instead."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from crossctr.data.dataset import prepare
from crossctr.data.io import DataError
from crossctr.data.movielens import (
    age_code,
    assign_split,
    build_movielens_table,
    load_ml1m,
    load_ml100k,
    write_movielens_dataset,
)
from crossctr.schema import ColumnSplit, DatasetSchema

# <workspace>/main/tests/data/this_file -> <workspace>/shared/data
DATA_ROOT = Path(os.environ.get("CROSSCTR_DATA_ROOT") or Path(__file__).resolve().parents[3] / "shared" / "data")
ML1M, ML100K = DATA_ROOT / "movielens-1m", DATA_ROOT / "movielens-100k"

# Rows and positive rates per domain, from the SOURCE.md files next to the data.
EXPECTED = {
    ("1m", "rich-poor"): {"18-44": (778_095, 0.5655), "45+": (194_903, 0.6138), "under-18": (27_211, 0.5737)},
    ("1m", "age3"): {"under-25": (210_747, 0.5524), "25-34": (395_556, 0.5626), "35+": (393_906, 0.5999)},
    ("100k", "rich-poor"): {"18-44": (79_095, 0.5457), "45+": (18_414, 0.5922), "under-18": (2_491, 0.5247)},
    ("100k", "age3"): {"under-25": (26_551, 0.5362), "25-34": (35_444, 0.5414), "35+": (38_005, 0.5775)},
}
STATS = ("user_count", "user_pos_rate", "movie_count", "movie_pos_rate", "genre_pos_rate")


def _need(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"{folder.name} not found under {DATA_ROOT}; set CROSSCTR_DATA_ROOT to the folder holding it")


@pytest.fixture(scope="module")
def ml1m() -> pa.Table:
    _need(ML1M)
    return load_ml1m(ML1M)


@pytest.fixture(scope="module")
def ml100k() -> pa.Table:
    _need(ML100K)
    return load_ml100k(ML100K)


@pytest.fixture(scope="module")
def tables(ml1m: pa.Table) -> dict[tuple[str, str], pa.Table]:
    """ML-1M click tables for both groupings, each with the other split kind too."""
    return {
        ("rich-poor", "random"): build_movielens_table(ml1m, domains="rich-poor", split="random", seed=0),
        ("age3", "time"): build_movielens_table(ml1m, domains="age3", split="time"),
    }


def _np(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def _per_domain(table: pa.Table) -> dict[str, tuple[int, float]]:
    """Domain -> (rows, positive rate rounded as SOURCE.md rounds it)."""
    rows = table.group_by("domain").aggregate([("label", "count"), ("label", "mean")]).to_pylist()
    return {r["domain"]: (r["label_count"], round(r["label_mean"], 4)) for r in rows}


# ---------------------------------------------------------------------------------------------
# ML-1M, real data.


def test_ml1m_loads_every_rating(ml1m: pa.Table) -> None:
    assert ml1m.num_rows == 1_000_209
    assert len(np.unique(_np(ml1m, "user_id"))) == 6_040
    assert len(np.unique(_np(ml1m, "movie_id"))) == 3_706
    assert np.bincount(_np(ml1m, "rating"))[1:].tolist() == [56_174, 107_557, 261_197, 348_971, 226_310]
    assert ml1m.column("occupation")[0].as_py() == "K-12 student"  # user 1: occupation code 10


@pytest.mark.parametrize("grouping,split", [("rich-poor", "random"), ("age3", "time")])
def test_ml1m_domains_match_source(tables: dict, grouping: str, split: str) -> None:
    table = tables[grouping, split]
    assert _per_domain(table) == EXPECTED["1m", grouping]
    assert round(float(_np(table, "label").mean()), 4) == 0.5752


@pytest.mark.parametrize("key", [("rich-poor", "random"), ("age3", "time")])
def test_ml1m_each_user_in_one_domain(tables: dict, key: tuple[str, str]) -> None:
    per_user = tables[key].group_by("user_id").aggregate([("domain", "count_distinct")])
    assert per_user.num_rows == 6_040
    assert pc.max(per_user.column("domain_count_distinct")).as_py() == 1


def test_ml1m_split_fractions(tables: dict) -> None:
    for key, tolerance in ((("rich-poor", "random"), 1e-5), (("age3", "time"), 0.01)):
        split = _np(tables[key], "split")
        shares = [float((split == s).mean()) for s in ("train", "valid", "test")]
        assert np.allclose(shares, [0.8, 0.1, 0.1], atol=tolerance), (key, shares)
    # Time split: every training rating is older than every validation one, and so on.
    table = tables["age3", "time"]
    ts, split = _np(table, "timestamp"), _np(table, "split")
    assert ts[split == "train"].max() < ts[split == "valid"].min()
    assert ts[split == "valid"].max() < ts[split == "test"].min()


def _recomputed(table: pa.Table, by: str, stat: str) -> np.ndarray:
    """Direct recomputation with Arrow's group-by on the training rows, mapped back to every row."""
    train = table.filter(pc.equal(table.column("split"), "train"))
    groups = train.group_by(by).aggregate([("label", stat)])
    at = pc.index_in(table.column(by), value_set=groups.column(by))
    return groups.column(f"label_{stat}").take(at).cast(pa.float64()).to_numpy(zero_copy_only=False)


@pytest.mark.parametrize("key", [("rich-poor", "random"), ("age3", "time")])
def test_ml1m_stats_equal_train_recomputation(tables: dict, key: tuple[str, str]) -> None:
    table = tables[key]
    for column, by, stat in (
        ("user_count", "user_id", "count"),
        ("user_pos_rate", "user_id", "mean"),
        ("movie_count", "movie_id", "count"),
        ("movie_pos_rate", "movie_id", "mean"),
        ("genre_pos_rate", "genre", "mean"),
    ):
        got = table.column(column).to_numpy(zero_copy_only=False).astype(float)
        want = _recomputed(table, by, stat)
        if stat == "mean":
            # Training rows get out-of-fold rates (checked below); held-out rows the train rate.
            train = _np(table, "split") == "train"
            got, want = got[~train], want[~train]
        # NaN (no training rows) must match NaN; assert_allclose treats NaN == NaN.
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"{column} by {by}")


def test_ml1m_unseen_in_train_gets_null(tables: dict) -> None:
    table = tables["rich-poor", "random"]
    split, movie = _np(table, "split"), _np(table, "movie_id")
    only_heldout = np.setdiff1d(movie[split != "train"], movie[split == "train"])
    assert len(only_heldout) > 0  # a few rarely rated movies land wholly in valid / test
    rows = np.isin(movie, only_heldout)
    assert table.column("movie_count").filter(pa.array(rows)).null_count == int(rows.sum())
    assert table.column("movie_pos_rate").filter(pa.array(rows)).null_count == int(rows.sum())
    # Time split: users who start rating after the training period have no user statistics.
    table = tables["age3", "time"]
    split, user = _np(table, "split"), _np(table, "user_id")
    late = np.isin(user, np.setdiff1d(user, user[split == "train"]))
    assert late.sum() > 0 and table.column("user_count").filter(pa.array(late)).null_count == int(late.sum())
    # Every training row has its own statistics.
    train = pa.array(split == "train")
    assert all(table.column(c).filter(train).null_count == 0 for c in ("user_count", "movie_count", "genre_pos_rate"))


def test_ml1m_stats_ignore_heldout_labels(ml1m: pa.Table, tables: dict) -> None:
    """Flipping every valid / test rating leaves every statistic unchanged: no leakage."""
    base = tables["rich-poor", "random"]
    heldout = _np(base, "split") != "train"
    stars = _np(ml1m, "rating").copy()
    stars[heldout] = 6 - stars[heldout]  # 5 <-> 1, 4 <-> 2: flips the label of most held-out rows
    flipped_raw = ml1m.set_column(ml1m.schema.get_field_index("rating"), "rating", pa.array(stars))
    flipped = build_movielens_table(flipped_raw, domains="rich-poor", split="random", seed=0)
    assert not np.array_equal(_np(flipped, "label"), _np(base, "label"))
    for column in STATS:
        assert flipped.column(column).equals(base.column(column)), column


def test_ml1m_features(tables: dict) -> None:
    table = tables["rich-poor", "random"]
    first = table.slice(0, 1).to_pylist()[0]  # user 1 rates movie 1193 at 2000-12-31 22:12:40 UTC
    assert (first["movie_id"], first["genre"], first["genre_2"], first["year"]) == (1193, "Drama", None, 1975.0)
    assert (first["gender"], first["age"], first["zip_prefix"], first["hour"], first["weekday"]) == (
        "F",
        1,
        "480",
        22,
        "Sun",
    )
    # First-genre row counts from SOURCE.md.
    genres = {d["values"]: d["counts"] for d in pc.value_counts(table.column("genre")).to_pylist()}
    assert (genres["Comedy"], genres["Action"], genres["Drama"], genres["Horror"]) == (
        276_923,
        257_457,
        208_627,
        44_170,
    )
    assert table.column("year").null_count == 0


def test_ml1m_written_dataset_prepares(
    ml1m: pa.Table, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reuse the loaded table instead of parsing the files a second time.
    monkeypatch.setattr("crossctr.data.movielens.load_ml1m", lambda root: ml1m)
    path = write_movielens_dataset(ML1M, tmp_path_factory.mktemp("ml1m"), domains="rich-poor", split="time")
    schema = DatasetSchema.from_yaml(path)
    assert isinstance(schema.split, ColumnSplit) and schema.domain.values == ("18-44", "45+", "under-18")
    assert set(schema.groups) == {"personal", "user_stats", "item", "item_stats", "context"}
    data = prepare(schema, path.parent)
    stats = json.loads((path.parent / "stats.json").read_text())
    for name, split in data.splits.items():
        per_domain = split.domain_counts(3)
        assert per_domain == [stats["per_domain"][d]["splits"][name]["rows"] for d in schema.domain.values]
    assert sum(len(s) for s in data.splits.values()) == 1_000_209
    assert stats["per_domain"]["under-18"]["rows"] == 27_211


# ---------------------------------------------------------------------------------------------
# ML-100K, real data.


@pytest.mark.parametrize("grouping", ["rich-poor", "age3"])
def test_ml100k_domains_match_source(ml100k: pa.Table, grouping: str) -> None:
    table = build_movielens_table(ml100k, domains=grouping)
    assert _per_domain(table) == EXPECTED["100k", grouping]
    assert round(float(_np(table, "label").mean()), 4) == 0.5537


def test_ml100k_written_dataset_prepares(ml100k: pa.Table, tmp_path: Path) -> None:
    path = write_movielens_dataset(ML100K, tmp_path, version="100k", domains="age3", seed=3)
    data = prepare(DatasetSchema.from_yaml(path), path.parent)
    assert [len(data.splits[s]) for s in ("train", "valid", "test")] == [80_000, 10_000, 10_000]


def test_ml100k_multitask_variant_has_rating5(ml100k: pa.Table, tmp_path: Path) -> None:
    path = write_movielens_dataset(ML100K, tmp_path, version="100k", tasks=True)
    data = prepare(DatasetSchema.from_yaml(path), path.parent)
    assert data.schema.task_names == ["rating5"] and data.schema.name.endswith("-mt")
    stars = ml100k.column("rating").to_numpy()
    tasks = torch.cat([data.splits[s].tasks[:, 0] for s in ("train", "valid", "test")])
    labels = torch.cat([data.splits[s].label for s in ("train", "valid", "test")])
    assert int(tasks.sum()) == int((stars == 5).sum()) and not torch.isnan(tasks).any()
    assert bool((labels[tasks == 1] == 1).all())  # a 5 is always a "liked" (>= 4)


# ---------------------------------------------------------------------------------------------
# Without real data: age codes, split helper, both ratings layouts, errors naming the file.


def test_age_code_maps_years_to_ml1m_codes() -> None:
    years = [7, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 73]
    assert age_code(np.array(years)).tolist() == [1, 1, 18, 18, 25, 25, 35, 35, 45, 45, 50, 50, 56, 56]


def test_assign_split_is_seeded() -> None:
    ts = np.arange(1000)
    a, b, c = assign_split(ts, "random", 0), assign_split(ts, "random", 0), assign_split(ts, "random", 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(a).tolist() == [800, 100, 100]
    assert np.bincount(assign_split(ts, "time")).tolist() == [800, 100, 100]


RATINGS = ["1::10::5::978300760", "1::20::3::978300761", "2::10::4::978300762", "2::30::1::978300763"]


def _fake_ml1m(folder: Path, parts: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072-1234\n")
    (folder / "movies.dat").write_bytes(
        "10::Am\xe9lie (2001)::Comedy|Romance\n20::Heat (1995)::Action\n30::X::Drama\n".encode("latin-1")
    )
    if parts == 0:
        (folder / "ratings.dat").write_text("\n".join(RATINGS) + "\n")
    else:
        size = -(-len(RATINGS) // parts)  # consecutive chunks, like the split ML-1M file
        for k in range(parts):
            (folder / f"ratings.part{k + 1:02d}.dat").write_text("\n".join(RATINGS[k * size : (k + 1) * size]) + "\n")
    return folder


def test_ml1m_reads_whole_file_or_parts(tmp_path: Path) -> None:
    whole = load_ml1m(_fake_ml1m(tmp_path / "whole"))
    split = load_ml1m(_fake_ml1m(tmp_path / "parts", parts=2))
    assert whole.equals(split)
    assert whole.column("title")[0].as_py() == "Amélie (2001)"  # latin-1 decoded
    table = build_movielens_table(whole)
    assert table.column("year").to_pylist() == [2001.0, 1995.0, 2001.0, None]
    assert table.column("domain").to_pylist() == ["under-18", "under-18", "45+", "45+"]


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda f: (f / "users.dat").unlink(), "users.dat: file not found"),
        (lambda f: (f / "ratings.dat").unlink(), "ratings.dat: file not found"),
        (lambda f: (f / "ratings.dat").write_text("1::10::5\n"), "ratings.dat: cannot be read"),
        (lambda f: (f / "ratings.dat").write_text("1::10::five::978300760\n"), "ratings.dat: cannot be read"),
        (lambda f: (f / "ratings.dat").write_text("1::10::9::978300760\n"), "ratings.dat: ratings must be 1..5"),
        (lambda f: (f / "ratings.dat").write_text("7::10::5::978300760\n"), "users.dat: ratings name 1 user ids"),
        (
            lambda f: (f / "users.dat").write_text("1::F::3::10::48067\n2::M::56::16::7\n"),
            "users.dat: age codes must be",
        ),
    ],
)
def test_ml1m_errors_name_the_file(tmp_path: Path, damage, message: str) -> None:
    folder = _fake_ml1m(tmp_path / "ml-1m")
    damage(folder)
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        load_ml1m(folder)


def test_ml1m_missing_part_is_an_error(tmp_path: Path) -> None:
    folder = _fake_ml1m(tmp_path / "ml-1m", parts=2)
    (folder / "ratings.part01.dat").unlink()
    with pytest.raises(DataError, match=r"rating parts \[1\] are missing"):
        load_ml1m(folder)


def test_ml100k_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"u\.data: file not found"):
        load_ml100k(tmp_path)


def test_training_rates_never_hold_the_rows_own_label() -> None:
    """Out-of-fold rates: on training rows the rate does not move with the row's own label.

    With the own label in (or left out alone), the label is readable from the rate within a
    user; out-of-fold, the mean rate of a user's positive and negative rows is about equal.
    """
    from crossctr.data.movielens import _train_stat

    rng = np.random.default_rng(0)
    keys = np.repeat(np.arange(400), 20)  # 400 users, 20 ratings each
    label = (rng.random(len(keys)) < 0.6).astype(np.int8)
    train = np.ones(len(keys), dtype=bool)
    _, rate = _train_stat(keys, label, train, seed=0)
    gap = np.nanmean(rate[label == 1]) - np.nanmean(rate[label == 0])
    assert abs(gap) < 0.02, gap  # leave-one-out would give about -1/19 = -0.053
    full = np.bincount(keys, weights=label) / 20
    assert np.corrcoef(rate, full[keys])[0, 1] > 0.5  # still informative about the user


def test_benchmark_variant_has_exactly_the_public_benchmarks_features(ml1m, tmp_path) -> None:
    from crossctr.data.movielens import BENCHMARK_FEATURES, build_benchmark_table

    table = build_benchmark_table(ml1m, domains="age3", seed=0)
    assert table.column_names == ["domain", "label", "split", *[f for f, _ in BENCHMARK_FEATURES]]
    assert table.num_rows == ml1m.num_rows
    label = table.column("label").to_numpy()
    assert (label == (ml1m.column("rating").to_numpy() > 3)).all()  # the benchmark's rule: rating > 3
    genres = ml1m.column("genres").to_pylist()
    cate = table.column("cate_id").to_pylist()
    assert all(c == g.split("|")[0] for c, g in zip(cate[:1000], genres[:1000], strict=False))  # first listed genre
    split = table.column("split").to_numpy(zero_copy_only=False)
    assert abs((split == "train").mean() - 0.8) < 1e-4 and abs((split == "test").mean() - 0.1) < 1e-4
    counts = {
        d: int((table.column("domain").to_numpy(zero_copy_only=False) == d).sum()) for d in ("under-25", "25-34", "35+")
    }
    assert counts == {d: n for d, (n, _) in EXPECTED[("1m", "age3")].items()}


def test_benchmark_variant_refuses_settings_the_benchmark_does_not_have(tmp_path) -> None:
    with pytest.raises(ValueError, match="random split, no tasks"):
        write_movielens_dataset(tmp_path, tmp_path / "out", split="time", features="benchmark")
