"""TensorBoard tracking: loss per step, per-domain validation AUC / log loss per epoch."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from crossctr.schema import ConfigError
from crossctr.training.config import TrainConfig
from crossctr.training.run import RunConfig, train_run
from crossctr.training.tracking import TensorBoardTracker, tensorboard_dir

HAS_TB = importlib.util.find_spec("tensorboard") is not None
SMALL = {"name": "tower", "nn": "deep", "deep": [8], "shared_dim": 4, "specific_dim": 2, "attention": False}


def test_setting_names_the_folder(tmp_path: Path) -> None:
    assert tensorboard_dir(None, tmp_path) is None and tensorboard_dir(False, tmp_path) is None
    assert tensorboard_dir(True, tmp_path) == tmp_path / "tensorboard"
    assert tensorboard_dir("logs/tb", tmp_path) == Path("logs/tb")


def test_without_tensorboard_the_error_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tensorboard is in the dev extra: hide it (a None in sys.modules makes its import fail).
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"pip install 'crossctr\[tensorboard\]'"):
        TensorBoardTracker(tmp_path)


@pytest.mark.skipif(not HAS_TB, reason="needs the tensorboard extra: pip install 'crossctr[tensorboard]'")
def test_run_logs_steps_and_per_domain_validation(tmp_path: Path, tiny_data) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = RunConfig(
        dataset="unused",
        model=SMALL,
        train=TrainConfig(epochs=2, patience=5, batch_size=256, progress=False, tensorboard=True),
    )
    train_run(cfg, tmp_path / "run", tiny_data)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    steps = acc.Scalars("joint/loss/click")
    assert len(steps) == 2 * -(-len(tiny_data.train) // 256)  # one point per optimizer step
    for d in ("A", "B", "C", "overall"):
        assert f"joint/valid_auc/{d}" in tags and f"joint/valid_logloss/{d}" in tags
    assert [e.step for e in acc.Scalars("joint/valid_auc/A")] == [1, 2]
