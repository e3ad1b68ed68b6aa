"""One tiny trained CNAN-AT run shared by the serving tests (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossctr.inference import Predictor
from crossctr.training.run import RunConfig, train_run

SMALL = {"shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [16, 8]}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, tiny_data) -> Path:
    out = tmp_path_factory.mktemp("run")
    train_run(
        RunConfig(dataset="unused", model={"name": "cnan", **SMALL}, train={"epochs": 1, "progress": False}),
        out,
        tiny_data,
    )
    return out


@pytest.fixture(scope="session")
def predictor(run_dir: Path) -> Predictor:
    return Predictor.load(run_dir)


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory, run_dir: Path) -> Path:
    """The run's ONNX export (one per session: the exporter takes seconds)."""
    from crossctr.serving.export import export_run

    return export_run(run_dir, tmp_path_factory.mktemp("export") / "cnan", parity_rows=512, bench_seconds=0).out
