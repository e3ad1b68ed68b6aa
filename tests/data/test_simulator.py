"""The simulator is the dataset every demo and many tests stand on, so pin its contract:
determinism, the paper's platform proportions, a learnable signal on every platform, and the
planted brand-versus-price contrast that the attention heatmap is meant to recover."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from crossctr.data.simulator import (
    PAPER_SIZES,
    PLATFORMS,
    SimulatorConfig,
    platform_row_counts,
    simulate,
    write_simulated_dataset,
)
from crossctr.schema import DatasetSchema, FeatureKind, TimeSplit

SMALL = SimulatorConfig(rows=40_000, seed=0)  # just above the 35,000 rows that give C 200 rows


@pytest.fixture(scope="module")
def small() -> tuple[pa.Table, dict]:
    return simulate(SMALL)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_simulated_dataset(tmp_path_factory.mktemp("sim"), SMALL)


def _platform(table: pa.Table) -> np.ndarray:
    return np.asarray(table["platform"].to_pylist())


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    again, truth = simulate(SMALL)
    assert again.equals(small[0])
    assert truth == small[1]
    other, _ = simulate(SimulatorConfig(rows=SMALL.rows, seed=1))
    assert not other.equals(small[0])
    a = write_simulated_dataset(tmp_path / "a", SMALL).parent
    b = write_simulated_dataset(tmp_path / "b", SMALL).parent
    for name in ("data.parquet", "dataset.yaml", "planted.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_platform_rows_follow_paper_proportion(small):
    table, truth = small
    total = sum(PAPER_SIZES.values())
    platform = _platform(table)
    for p in PLATFORMS:
        count = int((platform == p).sum())
        assert count == truth["rows"][p] == platform_row_counts(SMALL.rows)[p]
        assert abs(count - SMALL.rows * PAPER_SIZES[p] / total) < 1.0
    assert table.num_rows == SMALL.rows


def test_ctr_realistic_on_every_platform(small):
    table, _ = small
    click, platform = table["click"].to_numpy(), _platform(table)
    assert set(np.unique(click)) == {0, 1}
    for p in PLATFORMS:
        assert 0.1 <= click[platform == p].mean() <= 0.3, p


def test_planted_importance_brand_on_b_price_on_c(small):
    importance = small[1]["importance"]
    assert importance["B"]["brand"] > 2 * importance["B"]["price"]
    assert importance["C"]["price"] > 2 * importance["C"]["brand"]
    # A sits in the middle: neither term dominates.
    assert 0.5 < importance["A"]["brand"] / importance["A"]["price"] < 2.0
    assert set(importance["A"]) >= {"item_stats", "query_item", "price", "brand", "personal"}


def test_missing_values_present(small):
    table, _ = small
    for name in ("qi_sales_7d", "qi_ctr_7d", "user_age", "user_gender"):
        share = table[name].null_count / table.num_rows
        assert 0.01 < share < 0.15, (name, share)
    assert table["click"].null_count == table["platform"].null_count == 0


def test_dataset_yaml_validates_and_names_real_columns(written):
    schema = DatasetSchema.from_yaml(written)
    assert schema.name == "simulated-ecommerce"
    assert schema.domain.values == PLATFORMS
    assert isinstance(schema.split, TimeSplit) and schema.split.column == "day"
    table = pq.read_table(schema.resolve_path(written.parent))
    assert set(schema.required_columns()) <= set(table.column_names)
    for f in schema.features:
        want = pa.float64() if f.kind is FeatureKind.NUMERIC else pa.string()
        assert table.schema.field(f.name).type == want, f.name
    assert {"item_stats", "query_item", "price", "brand", "personal"} <= set(schema.groups)
    planted = (written.parent / "planted.json").read_text()
    assert '"importance"' in planted


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rows": 20_000}, "at least 35000"),
        ({"missing_rate": 0.9}, "missing_rate"),
        ({"days": 3}, "days"),
        ({"n_items": 5, "n_categories": 20}, "n_items"),
    ],
)
def test_invalid_config_says_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulatorConfig(**kwargs)


def _design_matrix(table: pa.Table) -> np.ndarray:
    """Standardised log numeric columns with missing flags, plus one-hot low-cardinality categories."""
    columns = []
    for name in table.column_names:
        if name in {"platform", "day", "click"} or name.endswith("_id") or name == "item_brand":
            continue  # ids need embeddings, not one-hot, to be useful
        if pa.types.is_floating(table.schema.field(name).type):
            x = table[name].to_numpy(zero_copy_only=False)
            missing = np.isnan(x)
            x = np.where(missing, np.nanmedian(x), x)
            x = x if name.endswith("ctr_7d") else np.log1p(x)
            columns += [missing.astype(float), (x - x.mean()) / (x.std() + 1e-9)]
        else:
            codes = pc.dictionary_encode(table[name].fill_null("<na>")).combine_chunks().indices.to_numpy()
            columns += list((codes[None, :] == np.unique(codes)[:, None]).astype(float))
    return np.stack(columns, axis=1)


def test_logistic_regression_learns_every_platform():
    # 150k rows give C ~120 test rows, enough for a stable AUC; the signal is planted well above 0.65.
    config = SimulatorConfig(rows=150_000, seed=0)
    table, _ = simulate(config)
    x, y = _design_matrix(table), table["click"].to_numpy()
    day, platform = table["day"].to_numpy(), _platform(table)
    train, test = day < config.valid_start, day >= config.test_start
    for p in PLATFORMS:
        fit_rows = np.flatnonzero(train & (platform == p))[:30_000]  # A needs no more to learn a linear model
        # liblinear: single-threaded, so a busy machine cannot stall the test in BLAS threads.
        model = LogisticRegression(solver="liblinear").fit(x[fit_rows], y[fit_rows])
        rows = test & (platform == p)
        auc = roc_auc_score(y[rows], model.predict_proba(x[rows])[:, 1])
        assert auc > 0.65, (p, auc)
