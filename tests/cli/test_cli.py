"""The command line as a user drives it: simulate, train from a config, evaluate, demo."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from crossctr.cli import cli

SMALL_MODEL = "{name: cnan, shared_dim: 8, specific_dim: 2, attention_hidden: [8, 4], deep: [32, 16]}"


def test_simulate_train_evaluate(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["simulate", "--out", str(tmp_path / "data"), "--rows", "40000", "--seed", "3"])
    assert r.exit_code == 0, r.output
    (tmp_path / "run.yaml").write_text(
        f"dataset: data/dataset.yaml\nmodel: {SMALL_MODEL}\ntrain: {{epochs: 1, progress: false}}\n"
    )
    r = runner.invoke(cli, ["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "| AUC (test) | A | B | C | overall |" in r.output
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    r = runner.invoke(cli, ["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "data" / "data.parquet")])
    assert r.exit_code == 0, r.output
    assert "LOGLOSS" in r.output
    r = runner.invoke(cli, ["evaluate", str(tmp_path / "run")])
    assert f"{stored['A']['auc']:.4f}" in r.output


def test_demo_prints_table_and_writes_heatmap(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path), "--rows", "36000", "--epochs", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "CNAN-AT (joint)" in r.output and "Self-train (Deep & Cross)" in r.output
    png = (tmp_path / "attention.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["test"]["CNAN-AT (joint)"]) == {"A", "B", "C", "overall"}


def test_bad_config_is_one_clear_line_not_a_traceback(tmp_path: Path, cli_process) -> None:
    (tmp_path / "run.yaml").write_text("dataset: d.yaml\nmodel: {name: cnan}\ntrain: {epoch: 3}\n")
    proc = cli_process("train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "train.epoch: unknown key; allowed keys here:" in proc.stderr and "epochs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dataset_lists_and_writes_registered_datasets(tmp_path: Path, monkeypatch) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["dataset", "list"])
    assert r.exit_code == 0 and "movielens-1m-mt" in r.output and "simulator" in r.output
    r = runner.invoke(cli, ["dataset", "no-such"])
    assert r.exit_code == 2 and "unknown dataset 'no-such'" in r.output
    monkeypatch.delenv("CROSSCTR_DATA_ROOT", raising=False)
    r = runner.invoke(cli, ["dataset", "movielens-1m", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--data-root" in r.output  # real data is never shipped: say where to point
    import crossctr.data.registry as registry

    monkeypatch.setattr(registry, "SIMULATOR_ROWS", 40_000)
    r = runner.invoke(cli, ["dataset", "simulator", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert Path(r.output.split("dataset: ")[1].strip()).is_file()
