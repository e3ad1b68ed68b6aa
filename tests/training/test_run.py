"""The run folder is self-contained: it loads without training code and without unpickling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crossctr.data.io import DataError
from crossctr.inference import Predictor, route_scores
from crossctr.schema import ConfigError
from crossctr.training.run import RunConfig, train_run

SMALL = {"shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [32, 16]}


@pytest.fixture(scope="module")
def cnan_run(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("run")
    cfg = RunConfig(dataset="unused", model={"name": "cnan", **SMALL}, train={"epochs": 2, "progress": False})
    return train_run(cfg, out, tiny_data)


def test_run_folder_holds_what_a_predictor_needs(cnan_run) -> None:
    files = {p.name for p in cnan_run.out.iterdir()}
    assert {
        "config.json",
        "encoders.json",
        "weights.safetensors",
        "metrics.json",
        "history.json",
        "attention.json",
    } <= files
    assert not any(p.suffix in (".pt", ".pkl", ".pth") for p in cnan_run.out.iterdir())
    cfg = json.loads((cnan_run.out / "config.json").read_text())
    assert cfg["model"]["name"] == "cnan" and cfg["crossctr_version"]
    metrics = json.loads((cnan_run.out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"A", "B", "C", "overall"}


def test_predictor_reproduces_training_predictions(cnan_run, tiny_data) -> None:
    pred = Predictor.load(cnan_run.out)
    res = cnan_run.result
    direct, _, _ = route_scores(res.members, res.route, tiny_data.test, ["A", "B", "C"])
    assert np.array_equal(pred.predict_encoded(tiny_data.test), direct)


def test_predictor_scores_raw_rows_with_unseen_categories(cnan_run, tiny_table) -> None:
    pred = Predictor.load(cnan_run.out)
    t = tiny_table(50, seed=11).drop_columns(["click"])
    unseen = t.set_column(t.column_names.index("brand"), "brand", pa.array(["never-seen"] * 50))
    p = pred.predict(unseen)
    assert p.shape == (50,) and np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    with pytest.raises(DataError, match=r"missing column\(s\) \['site'\]"):
        pred.predict(t.drop_columns(["site"]))


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run folder"):
        Predictor.load(tmp_path)


def test_scenario_restricts_domains(tmp_path: Path, tiny_data) -> None:
    cfg = RunConfig(
        dataset="unused", model={"name": "tower", **SMALL}, domains=("A", "C"), train={"epochs": 1, "progress": False}
    )
    res = train_run(cfg, tmp_path, tiny_data)
    assert set(res.metrics["test"]) == {"A", "C", "overall"}
    assert Predictor.load(tmp_path).domains == ["A", "C"]


def test_run_config_rejects_unknown_model_keys(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("dataset: d.yaml\nmodel: {name: cnan, shared_dims: 8}\n")
    with pytest.raises(ConfigError, match=r"shared_dims: unknown key; allowed keys here: .*shared_dim"):
        RunConfig.from_yaml(tmp_path / "run.yaml")
    (tmp_path / "run.yaml").write_text("dataset: d.yaml\nmodel: {name: cnna}\n")
    with pytest.raises(ConfigError, match=r"unknown model 'cnna'; registered models: \[.*'cnan'.*'single'.*\]"):
        RunConfig.from_yaml(tmp_path / "run.yaml")
