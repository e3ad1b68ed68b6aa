"""`crossctr plot RUN`: learning curves per domain from history.json."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from crossctr.cli import cli


def _epoch(e: int, domains: list[str]) -> dict:
    valid = {
        d: {"rows": 100.0, "auc": 0.6 + 0.01 * e + 0.02 * k, "logloss": 0.5 - 0.01 * e} for k, d in enumerate(domains)
    }
    valid["overall"] = {"rows": 100.0 * len(domains), "auc": 0.65, "logloss": 0.45}
    return {
        "epoch": e,
        "train_loss": {"click": 0.7 - 0.05 * e, "adv": -1.0},
        "valid": valid,
        "valid_mean_auc": 0.6 + 0.01 * e,
    }


def test_plot_draws_every_fit(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    history = {"pretrain": [_epoch(e, ["A"]) for e in (1, 2)], "finetune": [_epoch(e, ["B", "C"]) for e in (1, 2, 3)]}
    (run / "history.json").write_text(json.dumps(history))
    r = CliRunner().invoke(cli, ["plot", str(run)])
    assert r.exit_code == 0, r.output
    png = run / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    h, w = imread(png).shape[:2]
    assert h > w / 2  # two rows of panels: one per fit


def test_plot_without_history_says_so(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert r.exit_code == 1 and "no history.json" in r.output


def test_attention_heatmap_draws_contrast_and_level(tmp_path: Path) -> None:
    import numpy as np

    from crossctr.evaluation.report import attention_heatmap

    w = np.array([[0.530, 0.531, 0.529], [0.517, 0.5165, 0.5175]])  # level differs by 0.013, contrast by 0.001
    png = attention_heatmap(w, ["A", "B"], ["brand", "price", "personal"], tmp_path / "att.png", "title")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
