"""FineTune: the source domain keeps the model pretrained on it, the targets get the fine-tuned one."""

from __future__ import annotations

import torch

from crossctr.inference import route_scores
from crossctr.models import build_model, parse_model_config
from crossctr.training.config import TrainConfig
from crossctr.training.strategies import FineTuneStrategy, run_strategy
from crossctr.training.trainer import Trainer


def _factory(data):
    cfg = parse_model_config({"name": "tower", "nn": "deep", "deep": [8]})
    return lambda: build_model(cfg, data.encoder.cardinalities, 3)


def test_source_keeps_the_pretrained_model_by_default(tiny_data) -> None:
    trainer = Trainer(TrainConfig(epochs=1, progress=False), ["A", "B", "C"])
    res = run_strategy(
        FineTuneStrategy(finetune_epochs=1), _factory(tiny_data), tiny_data.train, tiny_data.valid, trainer
    )
    assert res.route == {"A": "pretrained", "B": "finetuned", "C": "finetuned"}  # A: most training rows
    pre, tuned = res.members["pretrained"], res.members["finetuned"]
    assert pre is not tuned
    # fine-tuning moved the targets' model away from the pretrained weights; the source's model stayed
    moved = [
        not torch.equal(a, b) for a, b in zip(pre.state_dict().values(), tuned.state_dict().values(), strict=False)
    ]
    assert any(moved)
    # A's rows are scored by the pretrained model: the same probabilities as that model alone
    a_rows = tiny_data.test.only_domains([0])
    routed, _, _ = route_scores(res.members, res.route, a_rows, ["A", "B", "C"])
    alone, _, _ = route_scores({"m": pre}, {"A": "m", "B": "m", "C": "m"}, a_rows, ["A", "B", "C"])
    assert (routed == alone).all()


def test_finetuned_everywhere_on_request(tiny_data) -> None:
    trainer = Trainer(TrainConfig(epochs=1, progress=False), ["A", "B", "C"])
    res = run_strategy(
        FineTuneStrategy(finetune_epochs=1, source="B", source_model="finetuned"),
        _factory(tiny_data),
        tiny_data.train,
        tiny_data.valid,
        trainer,
    )
    assert set(res.members) == {"finetuned"} and set(res.route.values()) == {"finetuned"}
    assert set(res.fits["pretrain"].best_valid) == {"B", "overall"}
