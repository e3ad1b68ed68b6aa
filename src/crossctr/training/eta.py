"""How long a run will take, said before it starts: a few training steps timed on this machine.

A run's cost is about (rows it trains on over all its fits and epochs) x (seconds per training
row) plus the validation passes. The seconds per row are measured, not assumed: a throwaway copy
of the model takes a few optimizer steps on real batches, so a busy or slow machine gets its own
estimate. Early stopping can only make the run shorter.

Example:
    >>> est = estimate_run(cfg, data)  # doctest: +SKIP
    >>> est.text
    'about 3 min (5 epochs over 240,000 rows at 41,000 rows/s, timed on 5 batches; early stopping may end sooner)'
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from crossctr.data.dataset import EncodedSplit, PreparedData
from crossctr.models import build_model
from crossctr.schema import StrictModel
from crossctr.training.config import TrainConfig
from crossctr.training.optim import optimizer_step
from crossctr.training.strategies import FineTuneStrategy, SrcOnlyStrategy, _source
from crossctr.training.trainer import Trainer, make_optimizers

__all__ = ["Estimate", "estimate_run", "rows_per_second", "duration"]

# Validating or scoring a row is a forward pass only: about a third of a training step's cost.
_EVAL_SHARE = 1 / 3


@dataclass
class Estimate:
    seconds: float  # the whole run, at most (early stopping may end it sooner)
    rows_per_s: float  # training rows per second, measured
    text: str


def duration(seconds: float) -> str:
    """'under a minute', 'about 4 min', 'about 1 h 20 min'."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60:02d} min"


def rows_per_second(model_cfg: StrictModel, data: PreparedData, train_cfg: TrainConfig, steps: int = 5) -> float:
    """Training rows per second of this model on these batches, measured on `steps` optimizer steps
    (after one warm-up step) of a throwaway model; the global RNG is left as it was."""
    names = list(data.schema.domain.values)
    trainer = Trainer(train_cfg, names)
    train: EncodedSplit = data.train
    bs = min(train_cfg.batch_size, len(train))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(model_cfg, data.encoder.cardinalities, len(names)).to(trainer.device)
        opts = make_optimizers(model, train_cfg)
        model.train()
        times = []
        for _ in range(steps + 1):
            idx = torch.randint(len(train), (bs,))  # random rows; no permutation of a billion-row split
            batch = train.batch(idx).to(trainer.device)
            t0 = time.perf_counter()
            loss, _ = trainer._loss(model, batch)
            optimizer_step(loss, opts)
            times.append(time.perf_counter() - t0)
    return bs / max(statistics.median(times[1:]), 1e-9)


def _trained_rows(strategy: Any, data: PreparedData, epochs: int) -> int:
    """Rows the strategy's fits go through over all their epochs (at most)."""
    names = list(data.schema.domain.values)
    counts = data.train.domain_counts(len(names))
    total = sum(counts)
    if isinstance(strategy, SrcOnlyStrategy):
        return epochs * counts[_source(strategy.source, data.train, names)]
    if isinstance(strategy, FineTuneStrategy):
        src = counts[_source(strategy.source, data.train, names)]
        return epochs * src + strategy.finetune_epochs * (total - src)
    return epochs * total  # joint: every row each epoch; self_train: each domain's rows, once per member


def estimate_run(cfg: Any, data: PreparedData, steps: int = 5) -> Estimate:
    """Estimate a RunConfig's training time on `data` (already restricted to cfg.domains, if any)."""
    rate = rows_per_second(cfg.model, data, cfg.train, steps)
    rows = _trained_rows(cfg.strategy, data, cfg.train.epochs)
    epochs_seen = rows / max(len(data.train), 1)
    validating = epochs_seen * len(data.valid) + len(data.valid) + len(data.test)
    seconds = (rows + _EVAL_SHARE * validating) / rate
    text = (
        f"{duration(seconds)} ({cfg.train.epochs} epochs over {len(data.train):,} training rows at {rate:,.0f} rows/s, "
        f"timed on {steps} batches; early stopping may end sooner)"
    )
    return Estimate(seconds, rate, text)
