"""The training recipe's knobs: per-domain loss weighting between `equal` and `rows`, and the
early-stopping criterion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossctr.data.batch import Shard
from crossctr.losses import DomainWeights as W
from crossctr.losses import click_loss, power_row_scale
from crossctr.models import SharedBottomConfig, build_model
from crossctr.training.config import TrainConfig
from crossctr.training.trainer import Trainer


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, generator=g)
    label = (torch.rand(10, generator=g) > 0.5).float()
    domain = torch.tensor([0] * 7 + [1] * 2 + [2])
    return logits, label, domain


def test_power_one_is_the_row_mean() -> None:
    logits, label, domain = _batch()
    scale = power_row_scale(torch.tensor([700.0, 200.0, 100.0]), 1.0)
    assert torch.allclose(
        click_loss(logits, label, domain, W(3, "power", scale)), click_loss(logits, label, domain, W(3, "rows"))
    )


def test_power_zero_weighs_domains_equally_when_the_batch_has_the_training_mix() -> None:
    logits, label, domain = _batch()  # the batch's mix 7 / 2 / 1 is the training mix below
    scale = power_row_scale(torch.tensor([700.0, 200.0, 100.0]), 0.0)
    assert torch.allclose(
        click_loss(logits, label, domain, W(3, "power", scale)), click_loss(logits, label, domain, W(3, "equal")) / 3
    )


def test_power_half_lies_between_and_gives_domains_weights_in_proportion_to_sqrt_rows() -> None:
    rows = torch.tensor([900.0, 100.0])
    scale = power_row_scale(rows, 0.5)
    weight = scale * rows / rows.sum()  # each domain's total weight in the row mean
    assert weight.sum().item() == pytest.approx(1.0)
    assert (weight[0] / weight[1]).item() == pytest.approx(3.0)  # sqrt(900 / 100)
    assert power_row_scale(torch.tensor([5.0, 0.0]), 0.5)[1].item() == 0.0  # a domain without rows


def test_sharded_power_loss_averages_to_the_global_one() -> None:
    logits, label, domain = _batch()
    scale = power_row_scale(torch.tensor([700.0, 200.0, 100.0]), 0.5)
    whole = click_loss(logits, label, domain, W(3, "power", scale))
    counts = torch.bincount(domain, minlength=3)
    halves = [torch.arange(0, 10, 2), torch.arange(1, 10, 2)]
    parts = [
        click_loss(logits[i], label[i], domain[i], W(3, "power", scale), Shard(2, 10, counts)) * (2 * len(i) / 10)
        for i in halves
    ]
    assert torch.allclose(sum(parts) / 2, whole)


def test_power_weighting_trains_and_selection_on_overall_auc(tiny_data) -> None:
    names = list(tiny_data.schema.domain.values)
    cfg = TrainConfig(
        epochs=3,
        batch_size=256,
        progress=False,
        patience=3,
        domain_weighting="power",
        weighting_power=0.3,
        select_on="overall",
    )
    torch.manual_seed(0)
    model = build_model(
        SharedBottomConfig(shared_dim=8, specific_dim=0, deep=(16,), tower=(4,), batch_norm=True),
        tiny_data.encoder.cardinalities,
        3,
    )
    fit = Trainer(cfg, names).fit(model, tiny_data.train, tiny_data.valid)
    overall = [h["valid"]["overall"]["auc"] for h in fit.history]
    assert [h["valid_selection_auc"] for h in fit.history] == overall
    assert fit.best_epoch == 1 + overall.index(max(overall))
    assert max(overall) > 0.6


def test_unknown_weighting_and_power_out_of_range_are_errors() -> None:
    with pytest.raises(ValueError, match="domain_weighting"):
        TrainConfig(domain_weighting="sqrt")
    with pytest.raises(ValueError, match="weighting_power"):
        TrainConfig(weighting_power=1.5)


def test_bce_reference() -> None:  # the loss is the plain BCE the weighting scales, not a re-implementation
    logits, label, domain = _batch()
    assert torch.allclose(
        click_loss(logits, label, domain, W(3, "rows")), 0.5 * F.binary_cross_entropy_with_logits(logits, label)
    )
