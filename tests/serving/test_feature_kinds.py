"""Scoring and serving a model whose dataset has hashed, crossed, bucketed and multi-valued features:
rows carry the raw columns (a crossed feature's own columns, "a|b" cells), never encoded ones."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from crossctr.data.prepare import load_dataset
from crossctr.inference import Predictor, route_scores
from crossctr.serving.app import create_app
from crossctr.serving.export import export_run
from crossctr.serving.predict import predict_file
from crossctr.training.run import RunConfig, train_run


@pytest.fixture(scope="module")
def kinds_run(tmp_path_factory, kinds_spec) -> tuple[Path, pa.Table]:
    root = tmp_path_factory.mktemp("kinds")
    rng = np.random.default_rng(1)
    n = 1500
    genres = np.array(["Action", "Comedy", "Drama", "Kids"])
    cells = ["|".join(rng.choice(genres, rng.integers(1, 4), replace=False)) for _ in range(n)]
    brand = rng.integers(0, 9, n)
    t = pa.table(
        {
            "site": rng.choice(["A", "B"], n),
            "click": (rng.random(n) < 0.2 + 0.06 * (brand % 4)).astype(np.int64),
            "brand": [f"b{i}" for i in brand],
            "price": rng.normal(size=n),
            "item": [f"i{i}" for i in rng.integers(0, 500, n)],
            "genres": cells,
        }
    )
    pq.write_table(t, root / "kinds.parquet")
    (root / "kinds.yaml").write_text(yaml.safe_dump(kinds_spec))
    cfg = RunConfig.model_validate(
        {
            "dataset": str(root / "kinds.yaml"),
            "model": {"name": "cnan", "shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [16, 8]},
            "train": {"epochs": 1, "batch_size": 256, "progress": False, "threads": 1, "device": "cpu"},
        }
    )
    train_run(cfg, root / "run")
    return root, t


def test_predictor_scores_raw_rows_with_crossed_and_multi_valued_columns(kinds_run) -> None:
    root, table = kinds_run
    pred = Predictor.load(root / "run")
    raw = table.drop_columns(["click"])  # no label, no crossed column: its parts only
    got = pred.predict(raw)
    data = load_dataset(root / "kinds.yaml")
    enc = pred.encode(table)
    want, _, _ = route_scores(pred.members, pred.route, enc, ["A", "B"])
    assert np.allclose(got, want) and len(got) == table.num_rows
    res = predict_file(root / "run", _write(root, raw), root / "scored.parquet", progress=False)
    assert res.rows == table.num_rows and np.allclose(
        pq.read_table(root / "scored.parquet").column("score").to_numpy(), got
    )
    assert data.schema.raw_feature_columns() == {"brand": False, "price": True, "item": False, "genres": False}


def _write(root: Path, t: pa.Table) -> Path:
    pq.write_table(t, root / "raw.parquet")
    return root / "raw.parquet"


def test_service_takes_the_raw_columns(kinds_run) -> None:
    root, table = kinds_run
    pred = Predictor.load(root / "run")
    rows = table.slice(0, 5).drop_columns(["click"]).to_pylist()
    with TestClient(create_app(root / "run", engine="torch")) as client:
        r = client.post("/v1/score", json={"rows": rows})
        assert r.status_code == 200, r.text
        assert np.allclose(r.json()["scores"], pred.predict(table.slice(0, 5)), atol=1e-6)
        bad = [{k: v for k, v in rows[0].items() if k != "price"}]
        r = client.post("/v1/score", json={"rows": bad})
        assert r.status_code == 422 and "price" in r.text


def test_wide_and_fm_models_with_multi_valued_features_export_to_onnx(kinds_run, tmp_path: Path) -> None:
    root, table = kinds_run
    cfg = RunConfig.model_validate(
        {
            "dataset": str(root / "kinds.yaml"),
            "model": {
                "name": "tower",
                "nn": "deepfm",
                "shared_dim": 8,
                "specific_dim": 2,
                "attention_hidden": [8, 4],
                "deep": [16, 8],
            },
            "train": {"epochs": 1, "batch_size": 256, "progress": False, "threads": 1, "device": "cpu"},
        }
    )
    train_run(cfg, tmp_path / "run")
    res = export_run(tmp_path / "run", tmp_path / "onnx", parity_rows=300, bench_seconds=0)
    assert res.max_abs_diff < 1e-5 and res.manifest["inputs"]["features"]["slots"] == [1, 1, 1, 1, 3]
    rows = table.slice(0, 4).drop_columns(["click"]).to_pylist()
    with TestClient(create_app(res.out)) as client:  # onnxruntime
        r = client.post("/v1/score", json={"rows": rows})
    assert r.status_code == 200, r.text
    assert np.allclose(r.json()["scores"], Predictor.load(tmp_path / "run").predict(table.slice(0, 4)), atol=1e-5)
