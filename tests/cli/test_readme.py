"""The README's run-config example runs as written, in order: simulate, train, evaluate, split,
plot, then the `inspect` / `prepare` example on the same data.

The slow test runs it exactly as printed (300,000 rows, CNAN-AT at full size, 5 epochs). The
fast one runs the same commands, in the same order, from the same README text, with fewer rows,
one epoch and a small CNAN-AT: only those three values are substituted, and each substitution
must find its text, so an edited README cannot slip past the test.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from crossctr.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"
FAST = {
    "--rows 300000": "--rows 36000",
    "train: {epochs: 5,": "train: {epochs: 1,",
    "model: {name: cnan}": "model: {name: cnan, shared_dim: 8, specific_dim: 2, attention_hidden: [8, 4], deep: [16, 8]}",
}


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def _example() -> tuple[str, list[str]]:
    """The run config YAML and the commands that follow it in the README, then the `inspect` /
    `prepare` block that reads the same data/ (later in the README)."""
    text = README.read_text(encoding="utf-8")
    m = re.search(r"A run config picks the model.*?```yaml\n(.*?)```.*?```bash\n(.*?)```", text, re.S)
    assert m, "README: the run config example (```yaml then ```bash) is missing"
    later = re.search(r"```bash\n(\.venv/bin/crossctr inspect data/dataset\.yaml.*?)```", text[m.end():], re.S)
    assert later, "README: the inspect / prepare example on data/dataset.yaml is missing"
    return m.group(1), _commands(m.group(2)) + _commands(later.group(1))


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> dict[str, str]:
    yaml_text, commands = _example()
    if fast:
        for old, new in FAST.items():
            hits = yaml_text.count(old) + sum(c.count(old) for c in commands)
            assert hits == 1, f"README example: expected {old!r} once, found it {hits} times"
            yaml_text = yaml_text.replace(old, new)
            commands = [c.replace(old, new) for c in commands]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml_text)
    outputs = {}
    for command in commands:
        args = shlex.split(command)
        assert args[0] == ".venv/bin/crossctr", command
        r = CliRunner().invoke(cli, args[1:])
        assert r.exit_code == 0, f"{command}\n{r.output}"
        outputs[args[1] + (" --data" if "--data" in args else "")] = r.output
    return outputs


def _check(tmp_path: Path, out: dict[str, str]) -> None:
    assert "| AUC (test) | A | C | overall |" in out["train"]  # domains: [A, C]
    assert "| AUC (test) | A | C | overall |" in out["evaluate"]
    assert "| AUC (test) | A | C | overall |" in out["evaluate --data"] and "left out" in out["evaluate --data"]
    assert (tmp_path / "runs/cnan/heldout/test.parquet").is_file()
    assert (tmp_path / "runs/cnan/learning_curves.png").is_file()
    assert (tmp_path / "report/inspect.md").is_file() and (tmp_path / "prepared/prepared.json").is_file()


def test_readme_run_example_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _check(tmp_path, _run(tmp_path, monkeypatch, fast=True))


@pytest.mark.slow
def test_readme_run_example_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _check(tmp_path, _run(tmp_path, monkeypatch, fast=False))
