"""`crossctr evaluate` never calls rows outside the run's test split "test"; `crossctr split`
writes the run's held-out rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from crossctr.cli import cli

SMALL_MODEL = "{name: cnan, shared_dim: 4, specific_dim: 2, attention_hidden: [4, 2], deep: [8, 4]}"


def _train(folder: Path, name: str, extra: str = "") -> Path:
    (folder / f"{name}.yaml").write_text(
        f"dataset: dataset.yaml\nmodel: {SMALL_MODEL}\ntrain: {{epochs: 1, progress: false}}\n{extra}"
    )
    r = CliRunner().invoke(cli, ["train", "--config", str(folder / f"{name}.yaml"), "--out", str(folder / name)])
    assert r.exit_code == 0, r.output
    return folder / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_table, tiny_schema) -> Path:
    """A dataset folder (tiny.parquet + dataset.yaml) with one run, `run`, trained on it."""
    folder = tmp_path_factory.mktemp("evaluate")
    pq.write_table(tiny_table(), folder / "tiny.parquet")
    (folder / "dataset.yaml").write_text(yaml.safe_dump(tiny_schema.model_dump(mode="json")))
    _train(folder, "run")
    return folder


def _header(output: str) -> str:
    """The AUC table's first header cell, e.g. 'AUC (test)'."""
    m = re.search(r"^\| (AUC \([^)]*\)) \|", output, re.M)
    assert m, output
    return m.group(1)


def _auc(output: str, run: str = "run") -> list[str]:
    line = next(ln for ln in output.splitlines() if ln.startswith(f"| {run} |"))
    return [c.strip() for c in line.strip("|").split("|")[1:]]


def test_default_and_training_file_score_the_test_split_only(trained: Path) -> None:
    runner = CliRunner()
    stored = json.loads((trained / "run" / "metrics.json").read_text())["test"]
    r = runner.invoke(cli, ["evaluate", str(trained / "run")])
    assert r.exit_code == 0, r.output
    assert _header(r.output) == "AUC (test)"
    r2 = runner.invoke(cli, ["evaluate", str(trained / "run"), "--data", str(trained / "tiny.parquet")])
    assert r2.exit_code == 0, r2.output
    assert _header(r2.output) == "AUC (test)"
    assert "training file" in r2.output and f"{int(stored['overall']['rows']):,} rows of its test split" in r2.output
    # the same rows as the run's own test evaluation, hence the same numbers
    assert _auc(r2.output) == _auc(r.output)
    assert _auc(r.output)[0] == f"{stored['A']['auc']:.4f}"


def test_split_writes_the_test_rows_and_they_evaluate_as_test(trained: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    stored = json.loads((trained / "run" / "metrics.json").read_text())
    r = runner.invoke(
        cli, ["split", str(trained / "run"), "--out", str(tmp_path / "held"), "--data", str(trained / "dataset.yaml")]
    )
    assert r.exit_code == 0, r.output
    test = pq.read_table(tmp_path / "held" / "test.parquet")
    valid = pq.read_table(tmp_path / "held" / "valid.parquet")
    assert test.num_rows == stored["test"]["overall"]["rows"] and valid.num_rows == stored["valid"]["overall"]["rows"]
    r = runner.invoke(cli, ["evaluate", str(trained / "run"), "--data", str(tmp_path / "held" / "test.parquet")])
    assert r.exit_code == 0, r.output
    assert _header(r.output) == "AUC (test)"
    assert _auc(r.output)[-1] == f"{stored['test']['overall']['auc']:.4f}"
    r = runner.invoke(cli, ["evaluate", str(trained / "run"), "--data", str(tmp_path / "held" / "valid.parquet")])
    assert _header(r.output) == "AUC (valid)" and "warning:" in r.output


def test_another_file_with_training_rows_is_named_and_warned(trained: Path, tmp_path: Path, tiny_table) -> None:
    """Shuffled rows of the training file (a different order: no digest matches) plus new rows."""
    full = pq.read_table(trained / "tiny.parquet")
    rng = np.random.default_rng(0)
    mixed = pa.concat_tables([full.take(pa.array(rng.permutation(full.num_rows)[:1500])), tiny_table(500, seed=99)])
    pq.write_table(mixed, tmp_path / "test.parquet")  # a name that says test, rows that are not
    r = CliRunner().invoke(cli, ["evaluate", str(trained / "run"), "--data", str(tmp_path / "test.parquet")])
    assert r.exit_code == 0, r.output
    assert _header(r.output) == "AUC (file test.parquet)"
    assert "| AUC (test)" not in r.output and "| LOGLOSS (test)" not in r.output
    m = re.search(r"holds about ([\d,]+) rows it trained on", r.stderr)
    assert m, r.stderr
    assert 600 <= int(m.group(1).replace(",", "")) <= 1800  # ~1,200 of the 1,500 are training rows (80 %)


def test_fresh_rows_are_named_without_warning(trained: Path, tmp_path: Path, tiny_table) -> None:
    pq.write_table(tiny_table(800, seed=123), tmp_path / "new.parquet")
    r = CliRunner().invoke(cli, ["evaluate", str(trained / "run"), "--data", str(tmp_path / "new.parquet")])
    assert r.exit_code == 0, r.output
    assert _header(r.output) == "AUC (file new.parquet)"
    assert "warning" not in r.stderr and "no more of them" in r.output


def test_domain_subset_run_evaluates_the_training_file(trained: Path) -> None:
    """The README's case: a run with `domains: [A, C]` scored on a file that also holds B."""
    run = _train(trained, "ac", "domains: [A, C]\n")
    stored = json.loads((run / "metrics.json").read_text())["test"]
    r = CliRunner().invoke(cli, ["evaluate", str(run), "--data", str(trained / "tiny.parquet")])
    assert r.exit_code == 0, r.output
    assert "left out" in r.output and "B (" in r.output
    assert _header(r.output) == "AUC (test)"
    assert _auc(r.output, "ac")[-1] == f"{stored['overall']['auc']:.4f}"


def test_run_from_a_prepared_folder_matches_the_raw_training_file(trained: Path) -> None:
    """`crossctr prepare` encodes and splits in a stream; its test rows are the ones evaluate finds in the raw file."""
    runner = CliRunner()
    r = runner.invoke(
        cli, ["prepare", str(trained / "dataset.yaml"), "--out", str(trained / "prepared"), "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    (trained / "prep.yaml").write_text(
        f"dataset: prepared\nmodel: {SMALL_MODEL}\ntrain: {{epochs: 1, progress: false}}\n"
    )
    r = runner.invoke(cli, ["train", "--config", str(trained / "prep.yaml"), "--out", str(trained / "prep")])
    assert r.exit_code == 0, r.output
    stored = json.loads((trained / "prep" / "metrics.json").read_text())["test"]
    r = runner.invoke(cli, ["evaluate", str(trained / "prep"), "--data", str(trained / "tiny.parquet")])
    assert r.exit_code == 0, r.output
    assert _header(r.output) == "AUC (test)" and _auc(r.output, "prep")[-1] == f"{stored['overall']['auc']:.4f}"
    r = runner.invoke(cli, ["split", str(trained / "prep"), "--out", str(trained / "prep-held")])
    assert "prepared folder" in str(r.exception) and "--data" in str(
        r.exception
    )  # no raw rows there: pass --data (main() prints it as one line)
    r = runner.invoke(
        cli,
        ["split", str(trained / "prep"), "--out", str(trained / "prep-held"), "--data", str(trained / "dataset.yaml")],
    )
    assert r.exit_code == 0, r.output
