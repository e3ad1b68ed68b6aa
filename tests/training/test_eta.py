"""Time estimates: measured steps times the rows each strategy trains on."""

from __future__ import annotations

import torch

from crossctr.training.config import TrainConfig
from crossctr.training.eta import _trained_rows, duration, estimate_run
from crossctr.training.run import RunConfig
from crossctr.training.strategies import FineTuneStrategy, SelfTrainStrategy, SrcOnlyStrategy

SMALL = {"name": "tower", "nn": "deep", "deep": [8], "shared_dim": 4, "specific_dim": 2, "attention": False}


def test_rows_per_strategy(tiny_data) -> None:
    counts = tiny_data.train.domain_counts(3)  # A has the most rows
    total = sum(counts)
    assert _trained_rows(SelfTrainStrategy(), tiny_data, 2) == 2 * total
    assert _trained_rows(SrcOnlyStrategy(), tiny_data, 2) == 2 * counts[0]
    assert _trained_rows(FineTuneStrategy(finetune_epochs=3), tiny_data, 2) == 2 * counts[0] + 3 * (total - counts[0])


def test_estimate_is_positive_and_leaves_the_rng_alone(tiny_data) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    est = estimate_run(
        RunConfig(dataset="unused", model=SMALL, train=TrainConfig(epochs=2, batch_size=256, progress=False)),
        tiny_data,
        steps=2,
    )
    assert torch.equal(torch.get_rng_state(), before)
    assert est.seconds > 0 and est.rows_per_s > 0 and "2 epochs over" in est.text


def test_duration_words() -> None:
    assert duration(30) == "under a minute" and duration(240) == "about 4 min" and duration(4800) == "about 1 h 20 min"
