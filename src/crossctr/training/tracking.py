"""Experiment tracking: TensorBoard logs of a fit, step by step and epoch by epoch.

`train: {tensorboard: true}` (or `crossctr train --tensorboard DIR`) logs, per fit of the
strategy (`joint`, each self-train domain, `pretrain` / `finetune`):

    <fit>/loss/<term>             every optimizer step: click, adv, domain, ... (unweighted terms)
    <fit>/valid_auc/<domain>      every epoch, and valid_auc/overall
    <fit>/valid_logloss/<domain>  every epoch
    <fit>/valid_mean_auc          every epoch: the early-stopping criterion

It uses `torch.utils.tensorboard`, which needs the `tensorboard` package (the `tensorboard`
extra: `pip install 'crossctr[tensorboard]'`). Without a tracker the trainer logs nothing more.

Example:
    >>> tracker = make_tracker(True, "runs/x")  # doctest: +SKIP
    >>> tracker.log_step("joint", 1, {"click": 0.69})  # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from crossctr.schema import ConfigError

__all__ = ["Tracker", "TensorBoardTracker", "make_tracker", "tensorboard_dir"]


class Tracker(Protocol):
    def log_step(self, fit: str, step: int, terms: dict[str, float]) -> None: ...

    def log_epoch(self, fit: str, epoch: int, valid: dict[str, dict[str, float]], mean_auc: float) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Writes TensorBoard event files under `log_dir`."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard (or --tensorboard) needs the tensorboard package, which is not installed: "
                "pip install 'crossctr[tensorboard]' (or pip install tensorboard), or leave tensorboard off"
            ) from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_step(self, fit: str, step: int, terms: dict[str, float]) -> None:
        for name, value in terms.items():
            self.writer.add_scalar(f"{fit}/loss/{name}", value, step)

    def log_epoch(self, fit: str, epoch: int, valid: dict[str, dict[str, float]], mean_auc: float) -> None:
        for domain, m in valid.items():
            for metric in ("auc", "logloss"):
                value = m.get(metric, float("nan"))
                if value is not None and not math.isnan(value):
                    self.writer.add_scalar(f"{fit}/valid_{metric}/{domain}", value, epoch)
        if not math.isnan(mean_auc):
            self.writer.add_scalar(f"{fit}/valid_mean_auc", mean_auc, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tensorboard_dir(setting: Any, run_dir: str | Path) -> Path | None:
    """Where `train.tensorboard` logs: true -> RUN/tensorboard, a path -> it, None / false -> nowhere."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return Path(run_dir) / "tensorboard"
    return Path(str(setting))


def make_tracker(setting: Any, run_dir: str | Path) -> TensorBoardTracker | None:
    """The tracker `train.tensorboard` asks for, or None."""
    folder = tensorboard_dir(setting, run_dir)
    return None if folder is None else TensorBoardTracker(folder)
