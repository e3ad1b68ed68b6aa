"""docs/configuration.md is what the code generates, and every key in it says why it exists."""

from __future__ import annotations

from pathlib import Path

from crossctr.configref import DOC_PATH, missing_why, reference
from crossctr.models import REGISTRY
from crossctr.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def test_committed_reference_is_current() -> None:
    committed = (ROOT / DOC_PATH).read_text(encoding="utf-8")
    assert (
        committed == reference()
    ), f"{DOC_PATH} is out of date: run `crossctr config-reference --out {DOC_PATH}` and commit it"


def test_every_key_has_a_reason() -> None:
    assert missing_why() == [], "add a comment next to these fields (or a line in crossctr/configref.py _WHY)"


def test_reference_lists_every_key_and_default() -> None:
    text = reference()
    for name in TrainConfig.model_fields:
        assert f"| `train.{name}` |" in text
    assert f"| `train.epochs` | integer | `{TrainConfig().epochs}` |" in text
    for name in REGISTRY:
        assert f"#### `model` with `name: {name}`" in text
    assert "`strategy.source_model`" in text and "`split.fractions`" in text


def test_unknown_key_error_points_to_the_reference(tmp_path: Path, cli_process) -> None:
    (tmp_path / "run.yaml").write_text("dataset: d.yaml\ntrain: {epoch: 3}\n")
    proc = cli_process("train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and DOC_PATH in proc.stderr
