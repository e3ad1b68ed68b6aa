"""One NaN-to-JSON policy: results files write null, checkpoints read back the float they wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from crossctr.jsonsafe import dumps, finite, json_default, loads
from crossctr.training.checkpoint import Checkpointer


def test_results_files_write_non_finite_floats_as_null() -> None:
    obj = {"auc": float("nan"), "best": np.float32("-inf"), "rows": [np.float64(0.5), float("inf")], "n": np.int64(3)}
    text = json.dumps(finite(obj), default=json_default, allow_nan=False)
    assert json.loads(text) == {"auc": None, "best": None, "rows": [0.5, None], "n": 3}


def test_state_reads_back_float_for_float() -> None:
    obj = {
        "best_auc": float("-inf"),
        "history": [{"auc": float("nan"), "loss": 0.25}],
        "big": np.float64("inf"),
        "step": torch.tensor(4),
    }
    back = loads(dumps(obj))
    assert back["best_auc"] == -math.inf and back["big"] == math.inf and math.isnan(back["history"][0]["auc"])
    assert back["history"][0]["loss"] == 0.25 and back["step"] == 4
    assert "NaN" not in dumps(obj) and "Infinity" not in dumps(obj)  # strict JSON


def test_a_checkpoint_written_in_the_old_form_still_loads() -> None:
    # what training/checkpoint.py wrote before the policy moved to jsonsafe (the same form)
    old = '{"current": {"best_auc": {"$float": "-inf"}, "valid": {"A": {"auc": {"$float": "nan"}}}}, "finished": {}}'
    state = loads(old)
    assert state["current"]["best_auc"] == -math.inf and math.isnan(state["current"]["valid"]["A"]["auc"])


def test_a_checkpoint_keeps_a_best_score_of_minus_infinity(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "checkpoint", {"run": {"seed": 1}})
    ckpt.save_progress(
        "joint",
        {"model.w": torch.ones(2)},
        {"epoch": 1, "step": 3, "best_auc": float("-inf"), "history": [{"auc": float("nan")}]},
    )
    again = Checkpointer(tmp_path / "checkpoint", {"run": {"seed": 1}})
    again.load()
    saved = again.progress("joint")
    assert saved is not None and saved.record["best_auc"] == -math.inf and math.isnan(saved.record["history"][0]["auc"])
    assert torch.equal(saved.tensors["model.w"], torch.ones(2))
