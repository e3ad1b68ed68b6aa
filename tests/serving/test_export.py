"""`crossctr export`: the ONNX graph reproduces the run's PyTorch scores, one member or several."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from crossctr.cli import cli
from crossctr.data.dataset import EncodedSplit
from crossctr.inference import Predictor
from crossctr.models import REGISTRY, build_model, parse_model_config
from crossctr.schema import ConfigError
from crossctr.serving.export import (
    InferenceGraph,
    OnnxEngine,
    TorchEngine,
    _ort_session,
    export_run,
    load_serving_model,
    onnx_bytes,
    random_rows,
)
from crossctr.training.run import RunConfig, train_run

SMALL = {"shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [16, 8]}


@pytest.fixture(scope="module")
def cnan_run(run_dir: Path) -> Path:
    return run_dir  # the shared tiny CNAN-AT run (conftest.py)


@pytest.fixture(scope="module")
def self_train_run(tmp_path_factory, tiny_data) -> Path:
    out = tmp_path_factory.mktemp("self_train")
    cfg = RunConfig(
        dataset="unused",
        model={"name": "tower", "nn": "deepfm", **SMALL},
        strategy={"name": "self_train"},
        train={"epochs": 1, "progress": False},
    )
    train_run(cfg, out, tiny_data)
    return out


@pytest.fixture(scope="module")
def cnan_export(tmp_path_factory, cnan_run: Path):
    return export_run(cnan_run, tmp_path_factory.mktemp("export") / "cnan", parity_rows=2048, bench_seconds=0)


def _torch_scores(predictor: Predictor, data: EncodedSplit) -> np.ndarray:
    return predictor.predict_encoded(data)


def test_onnx_export_folder_and_manifest(cnan_export) -> None:
    out = cnan_export.out
    assert {p.name for p in out.iterdir()} == {
        "model.onnx",
        "encoders.json",
        "config.json",
        "metrics.json",
        "export.json",
    }
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["format"] == "onnx" and manifest["opset"] >= 17 and manifest["graph"] == "single"
    assert manifest["inputs"]["features"]["columns"] == ["brand", "price", "user"]
    assert manifest["inputs"]["domain"]["values"] == ["A", "B", "C"]
    assert manifest["parity"]["max_abs_diff"] == cnan_export.max_abs_diff < 1e-5
    model = onnx.load(str(out / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["features", "domain"] and [o.name for o in model.graph.output] == [
        "prob"
    ]
    text = json.dumps(manifest)
    assert str(out.parent) not in text and str(Path.cwd()) not in text, "no machine paths in the manifest"


def test_onnx_matches_predictor_on_real_rows(cnan_run, cnan_export, tiny_data) -> None:
    predictor = Predictor.load(cnan_run)
    engine = load_serving_model(cnan_export.out).engine
    assert isinstance(engine, OnnxEngine)
    test = tiny_data.test
    got = engine.score(test.features.numpy(), test.domain.numpy())
    assert np.max(np.abs(got - _torch_scores(predictor, test))) < 1e-5


def test_self_train_combined_graph_routes_each_domain_to_its_member(tmp_path: Path, self_train_run, tiny_data) -> None:
    res = export_run(self_train_run, tmp_path / "exp", parity_rows=1024, bench_seconds=0)
    assert (
        res.manifest["graph"] == "combined" and res.manifest["members"] == ["A", "B", "C"] and res.max_abs_diff < 1e-5
    )
    predictor = Predictor.load(self_train_run)
    engine = load_serving_model(tmp_path / "exp").engine
    test = tiny_data.test
    assert (
        np.max(np.abs(engine.score(test.features.numpy(), test.domain.numpy()) - predictor.predict_encoded(test)))
        < 1e-5
    )
    # routing: domain B's rows are scored by member B, not by A
    rows = test.select(test.domain == 1)
    member_b = predictor.members["B"]
    member_a = predictor.members["A"]
    graph_b = InferenceGraph({"B": member_b}, {"A": "B", "B": "B", "C": "B"}, ["A", "B", "C"])
    graph_a = InferenceGraph({"A": member_a}, {"A": "A", "B": "A", "C": "A"}, ["A", "B", "C"])
    got = engine.score(rows.features.numpy(), rows.domain.numpy())
    with torch.no_grad():
        x = rows.features.long()
        assert np.max(np.abs(got - graph_b(x, rows.domain).numpy())) < 1e-5
        assert np.max(np.abs(got - graph_a(x, rows.domain).numpy())) > 1e-4


@pytest.mark.parametrize(
    "model",
    [
        {"name": "cnan", **SMALL},
        {"name": "cnan", **SMALL, "specific_dim": 0, "attention": False},
        {"name": "cnan", **SMALL, "stacking": "parallel", "adversarial": "grl"},
        {"name": "tower", "nn": "dcn", "domain_adversarial": True, **SMALL},
        {"name": "tower", "nn": "wide_deep", **SMALL},
        {"name": "tower", "nn": "deepfm", **SMALL},
        *({"name": n, **SMALL} for n in ("shared_bottom", "mmoe", "ple", "star", "epnet")),
    ],
)
def test_inference_graph_equals_model_forward(model) -> None:
    """The graph scores with what the models' own forwards compute."""
    cards, n_domains = [9, 6, 12], 3
    torch.manual_seed(0)
    m = build_model(parse_model_config(model), cards, n_domains).eval()
    for p in m.parameters():  # move every weight off its init so no term hides as zero
        p.data.add_(0.1 * torch.randn_like(p))
    graph = InferenceGraph({"joint": m}, {"A": "joint", "B": "joint", "C": "joint"}, ["A", "B", "C"])
    x, d = random_rows(cards, n_domains, 300, seed=1)
    data = EncodedSplit.from_numpy(x, d, np.zeros(len(d), np.float32))
    with torch.no_grad():
        want = torch.sigmoid(m(data.as_batch()).logits).numpy()
        got = graph(torch.from_numpy(x), torch.from_numpy(d)).numpy()
    assert np.max(np.abs(got - want)) < 1e-6


def test_torchscript_export_parity(tmp_path: Path, cnan_run) -> None:
    res = export_run(cnan_run, tmp_path / "ts", format="torchscript", parity_rows=512, bench_seconds=0)
    assert (tmp_path / "ts" / "model.pt").is_file() and res.max_abs_diff < 1e-5
    with pytest.raises(ConfigError, match="loads ONNX exports or run folders"):
        load_serving_model(tmp_path / "ts")


def test_serving_model_checks(tmp_path: Path, cnan_run, cnan_export) -> None:
    assert isinstance(load_serving_model(cnan_run, engine="torch").engine, TorchEngine)
    with pytest.raises(ConfigError, match="has no PyTorch weights"):
        load_serving_model(cnan_export.out, engine="torch")
    with pytest.raises(ConfigError, match="engine 'gpu'"):
        load_serving_model(cnan_run, engine="gpu")  # type: ignore[arg-type]
    bad = tmp_path / "tampered"
    bad.mkdir()
    for p in cnan_export.out.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "model.onnx").write_bytes((bad / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="checksum differs"):
        load_serving_model(bad)
    with pytest.raises(ConfigError, match="not a run folder"):
        load_serving_model(tmp_path)


def test_cli_export_prints_parity_and_speed(tmp_path: Path, cnan_run) -> None:
    r = CliRunner().invoke(
        cli, ["export", str(cnan_run), "--out", str(tmp_path / "e"), "--parity-rows", "512", "--bench-seconds", "0.05"]
    )
    assert r.exit_code == 0, r.output
    assert "parity: max abs diff" in r.output and "onnx batch   100" in r.output and "torch batch   512" in r.output
    diff = json.loads((tmp_path / "e" / "export.json").read_text())["parity"]["max_abs_diff"]
    assert diff < 1e-5


def test_onnx_graph_handles_any_batch_shape(cnan_run, cnan_export) -> None:
    """One row, no rows, rows of a single domain: the data-dependent row selection stays exact."""
    predictor = Predictor.load(cnan_run)
    onnx_engine, torch_engine = load_serving_model(cnan_export.out).engine, TorchEngine(predictor)
    x, d = random_rows(list(predictor.config["cardinalities"]), 3, 64, seed=4)
    for xs, ds in [(x[:1], d[:1]), (x, np.full(64, 2)), (x[:7], np.array([0, 0, 2, 2, 0, 2, 0]))]:
        assert np.max(np.abs(onnx_engine.score(xs, ds) - torch_engine.score(xs, ds))) < 1e-5
    raw = onnx_engine.session.run(["prob"], {"features": x[:0], "domain": d[:0]})[0]
    assert raw.shape == (0,)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_model_exports_to_onnx_with_parity(name: str) -> None:
    """Every model is exported through its own eval forward, with parity on every domain and on one row."""
    cards, n_domains = [9, 6, 12], 3
    torch.manual_seed(0)
    m = build_model(parse_model_config({"name": name, **SMALL}), cards, n_domains).eval()
    for p in m.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    graph = InferenceGraph({"joint": m}, {"A": "joint", "B": "joint", "C": "joint"}, ["A", "B", "C"]).eval()
    x, d = random_rows(cards, n_domains, 257, seed=2)
    session = _ort_session(onnx_bytes(graph, len(cards)))
    got = session.run(["prob"], {"features": x, "domain": d})[0]
    with torch.no_grad():
        want = graph(torch.from_numpy(x), torch.from_numpy(d)).numpy()
    assert np.max(np.abs(got - want)) < 1e-5
    assert np.max(np.abs(session.run(["prob"], {"features": x[:1], "domain": d[:1]})[0] - want[:1])) < 1e-5


def test_export_module_names_no_model_class() -> None:
    """Export holds no model-specific code: no registered model class (nor its module) is named in it."""
    import crossctr.serving.export as export

    source = Path(export.__file__).read_text(encoding="utf-8")
    classes = {spec.build.__name__ for spec in REGISTRY.values()}
    assert len(classes) >= 9
    for name in sorted(classes):
        assert not re.search(rf"\b{name}\b", source), f"serving/export.py names the model class {name}"
    modules = {spec.build.__module__ for spec in REGISTRY.values()}
    for module in sorted(modules):
        assert module not in source, f"serving/export.py imports {module}"
