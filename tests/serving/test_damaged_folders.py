"""Damaged, edited or hostile run and export folders: a clear one-line error, never a traceback,
and never a file outside the folder."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from crossctr.cli import main
from crossctr.inference import Predictor
from crossctr.schema import ConfigError
from crossctr.serving.export import load_serving_model


def cli_error(monkeypatch, capsys, *args: str) -> str:
    """Run `crossctr ARGS` as the console script does; it must fail with a message, not a traceback."""
    monkeypatch.setattr(sys, "argv", ["crossctr", *args])
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("the service started on a folder it should refuse"))
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code not in (0, None) and "Traceback" not in err, err
    return err


@pytest.fixture()
def copy_run(tmp_path: Path, run_dir: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


@pytest.fixture()
def copy_export(tmp_path: Path, export_dir: Path) -> Path:
    return Path(shutil.copytree(export_dir, tmp_path / "exports" / "cnan"))


# ---- weights.safetensors ----


def _zero(p: Path) -> None:
    p.write_bytes(b"")


def _head(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:300])  # the header cut short


def _tail(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-100])  # the header whole, the tensors cut short


def _garbage(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).bytes(4000))


@pytest.mark.parametrize(
    "damage", [_zero, _head, _tail, _garbage], ids=["0-byte", "truncated-header", "truncated-data", "garbage"]
)
def test_damaged_weights_are_a_clean_error(monkeypatch, capsys, tmp_path: Path, copy_run: Path, damage) -> None:
    damage(copy_run / "weights.safetensors")
    with pytest.raises(
        ConfigError, match=r"weights\.safetensors: cannot be read as safetensors .*the run folder is damaged"
    ):
        Predictor.load(copy_run)
    err = cli_error(
        monkeypatch,
        capsys,
        "predict",
        str(copy_run),
        str(tmp_path / "in.parquet"),
        "--out",
        str(tmp_path / "out.parquet"),
    )
    assert err.startswith("error: ") and "weights.safetensors: cannot be read as safetensors" in err


# ---- config.json ----


def _edit(key: str, value):
    def edit(config: dict) -> dict:
        config[key] = value
        return config

    return edit


def _drop(key: str):
    return lambda config: {k: v for k, v in config.items() if k != key}


def _deeper(config: dict) -> dict:
    config["model"]["deep"] = [32, 8]  # a model the weights were not trained for
    return config


@pytest.mark.parametrize(
    "edit,expect",
    [
        (_deeper, r"member 'joint' does not match weights\.safetensors \(Error\(s\) in loading state_dict"),
        (
            lambda c: {**c, "members": ["other"], "route": dict.fromkeys(c["route"], "other")},
            r"member 'other' does not match weights\.safetensors",
        ),
        (_edit("members", ["other"]), r"route .* must send each domain .* to one of the members \['other'\]"),
        (_edit("members", "joint"), r"members must be a non-empty list"),
        (_edit("route", {"A": "joint"}), r"route .* must send each domain"),
        (_edit("route", {"A": "joint", "B": "joint", "C": "nobody"}), r"route .* must send each domain"),
        (_edit("cardinalities", "23,11"), r"cardinalities must be a list of positive integers"),
        (_edit("cardinalities", [23, 11]), r"member 'joint' does not match"),
        (_edit("domains", ["A", "B"]), r"domains \['A', 'B'\] differ from encoders\.json"),
        (_drop("model"), r"missing key\(s\) \['model'\]"),
        (lambda c: [c], r"holds a JSON list, not an object"),
    ],
    ids=[
        "model",
        "member-renamed",
        "member-unrouted",
        "members-type",
        "route-short",
        "route-unknown",
        "cards-type",
        "cards-short",
        "domains",
        "no-model",
        "list",
    ],
)
def test_edited_config_is_a_clean_error(monkeypatch, capsys, tmp_path: Path, copy_run: Path, edit, expect: str) -> None:
    path = copy_run / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(ConfigError, match=expect):
        Predictor.load(copy_run)
    assert "config.json" in cli_error(monkeypatch, capsys, "serve", str(copy_run), "--engine", "torch")


@pytest.mark.parametrize("text", ["", "{not json", "\xff\xfe{}"], ids=["empty", "not-json", "not-utf8"])
def test_unreadable_config_is_a_clean_error(copy_run: Path, text: str) -> None:
    (copy_run / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"config\.json: cannot be read as JSON"):
        Predictor.load(copy_run)


def test_unreadable_encoders_is_a_clean_error(copy_run: Path) -> None:
    (copy_run / "encoders.json").write_text('{"schema": 1}')
    with pytest.raises(ConfigError, match=r"encoders\.json: cannot be read as fitted encoders"):
        Predictor.load(copy_run)


# ---- export.json may not name a file outside its folder ----


@pytest.mark.parametrize("where", ["parent", "absolute", "nested"])
def test_export_file_outside_the_folder_is_refused(monkeypatch, capsys, copy_export: Path, where: str) -> None:
    outside = copy_export.parent / "x.onnx"
    shutil.copyfile(copy_export / "model.onnx", outside)  # same bytes: the checksum alone would pass
    name = {"parent": "../x.onnx", "absolute": str(outside.resolve()), "nested": "sub/model.onnx"}[where]
    if where == "nested":
        (copy_export / "sub").mkdir()
        shutil.copyfile(copy_export / "model.onnx", copy_export / "sub" / "model.onnx")
    manifest = json.loads((copy_export / "export.json").read_text())
    (copy_export / "export.json").write_text(json.dumps({**manifest, "file": name}))
    (copy_export / "model.onnx").unlink()
    with pytest.raises(ConfigError, match=r'export\.json "file" is .*not a file name inside the folder'):
        load_serving_model(copy_export)
    assert "a path that leaves the folder is refused" in cli_error(monkeypatch, capsys, "serve", str(copy_export))


def test_damaged_export_manifest_is_a_clean_error(monkeypatch, capsys, copy_export: Path) -> None:
    (copy_export / "export.json").write_text("{")
    with pytest.raises(ConfigError, match=r"export\.json: cannot be read as JSON"):
        load_serving_model(copy_export)
    (copy_export / "export.json").write_text(json.dumps({"format": "onnx"}))
    assert "export.json: missing ['file', 'route', 'sha256']" in cli_error(
        monkeypatch, capsys, "serve", str(copy_export)
    )


def test_intact_export_still_loads(copy_export: Path, predictor) -> None:
    model = load_serving_model(copy_export)
    assert model.kind == "export" and model.engine.name == "onnx"
