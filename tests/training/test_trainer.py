from __future__ import annotations

import pytest
import torch

from crossctr.losses import DomainWeights, click_loss
from crossctr.models import CNANConfig, build_model
from crossctr.schema import ConfigError
from crossctr.training.config import TrainConfig
from crossctr.training.strategies import FineTuneStrategy, SelfTrainStrategy, SrcOnlyStrategy, run_strategy
from crossctr.training.trainer import Trainer

SMALL = dict(shared_dim=8, specific_dim=2, attention_hidden=(8, 4), deep=(32, 16))


def _factory(data):
    return lambda: build_model(CNANConfig(**SMALL), data.encoder.cardinalities, 3)


def test_click_loss_weighs_every_domain_equally() -> None:
    logits = torch.tensor([0.0, 0.0, 0.0, 2.0])
    label = torch.tensor([1.0, 1.0, 1.0, 0.0])
    domain = torch.tensor([0, 0, 0, 1])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, label, reduction="none")
    assert torch.allclose(click_loss(logits, label, domain, DomainWeights(2)), 0.5 * (bce[:3].mean() + bce[3]))
    assert torch.allclose(click_loss(logits, label, domain, DomainWeights(2, "rows")), 0.5 * bce.mean())


def test_fit_learns_keeps_best_epoch_and_reports_history(tiny_data) -> None:
    cfg = TrainConfig(epochs=4, batch_size=256, progress=False, patience=4)
    trainer = Trainer(cfg, list(tiny_data.schema.domain.values))
    torch.manual_seed(0)
    model = _factory(tiny_data)()
    fit = trainer.fit(model, tiny_data.train, tiny_data.valid)
    assert len(fit.history) == 4
    aucs = [h["valid_mean_auc"] for h in fit.history]
    assert fit.best_epoch == 1 + aucs.index(max(aucs))
    # The model handed back is the best epoch's, not the last one's.
    again = trainer.evaluate(model, tiny_data.valid)
    assert again["A"]["auc"] == pytest.approx(fit.best_valid["A"]["auc"], abs=1e-9)
    assert max(aucs) > 0.65


def test_unweighted_auxiliary_loss_is_an_error(tiny_data) -> None:
    cfg = TrainConfig(epochs=1, progress=False, loss_weights={"adv": 0.1})
    trainer = Trainer(cfg, list(tiny_data.schema.domain.values))
    with pytest.raises(ConfigError, match=r"auxiliary loss '(domain|disc)' with no weight"):
        trainer.fit(_factory(tiny_data)(), tiny_data.train, tiny_data.valid)


def test_self_train_trains_one_model_per_domain_on_its_rows_only(tiny_data) -> None:
    trainer = Trainer(TrainConfig(epochs=1, progress=False), ["A", "B", "C"])
    res = run_strategy(SelfTrainStrategy(), _factory(tiny_data), tiny_data.train, tiny_data.valid, trainer)
    assert res.route == {"A": "A", "B": "B", "C": "C"}
    counts = tiny_data.train.domain_counts(3)
    for name in "ABC":
        assert res.fits[name].history[0]["train_rows_per_s"] > 0
        assert set(res.fits[name].best_valid) == {name, "overall"}  # validated on its own domain only
    assert sum(counts) == len(tiny_data.train)


def test_src_only_and_finetune_route_every_domain_to_one_model(tiny_data) -> None:
    trainer = Trainer(TrainConfig(epochs=1, progress=False), ["A", "B", "C"])
    src = run_strategy(SrcOnlyStrategy(), _factory(tiny_data), tiny_data.train, tiny_data.valid, trainer)
    assert set(src.route.values()) == {"source"}
    assert set(src.fits["source"].best_valid) == {"A", "overall"}  # A is the richest domain
    ft = run_strategy(
        FineTuneStrategy(finetune_epochs=1), _factory(tiny_data), tiny_data.train, tiny_data.valid, trainer
    )
    assert set(ft.fits) == {"pretrain", "finetune"}
    assert set(ft.fits["finetune"].best_valid) == {"B", "C", "overall"}
    with pytest.raises(ConfigError, match="strategy.source 'Z' is not a domain"):
        run_strategy(SrcOnlyStrategy(source="Z"), _factory(tiny_data), tiny_data.train, tiny_data.valid, trainer)
