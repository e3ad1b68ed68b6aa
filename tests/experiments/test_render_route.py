"""The report says which model scores FineTune's source domain (the run's route)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from crossctr.experiments.render import render_report

_spec = importlib.util.spec_from_file_location("render_cases", Path(__file__).with_name("test_render.py"))
_cases = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_cases)  # type: ignore[union-attr]


def test_report_states_which_model_scores_finetunes_source(tmp_path: Path) -> None:
    _cases._write(tmp_path)  # the smoke grid's synthetic results (A is the richest domain)
    render_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert (
        "FineTune: pretrained on A (the most training rows), then fine-tuned "
        "on the other domains' rows; A is scored by the model pretrained on it" in md
    )
