"""bf16 autocast training: matmuls in bfloat16, weights/losses in fp32, the same model learnt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossctr.schema import ConfigError
from crossctr.training.config import TrainConfig
from crossctr.training.run import RunConfig, train_run
from crossctr.training.trainer import Trainer

SMALL = {"shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [32, 16]}


def _cfg(precision: str | None) -> RunConfig:
    train = {"epochs": 3, "batch_size": 128, "progress": False, "threads": 1, "device": "cpu", "seed": 0}
    if precision:
        train["precision"] = precision
    return RunConfig.model_validate({"dataset": "unused", "model": {"name": "cnan", **SMALL}, "train": train})


def test_bf16_runs_matmuls_in_bf16_and_keeps_fp32_weights(tiny_data, monkeypatch, tmp_path: Path) -> None:
    seen: list[torch.dtype] = []
    loss = Trainer._loss

    def spy(self, model, batch, *a, **k):
        handle = model.shared.deep.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        try:
            return loss(self, model, batch, *a, **k)
        finally:
            handle.remove()

    monkeypatch.setattr(Trainer, "_loss", spy)
    res = train_run(_cfg("bf16"), tmp_path, tiny_data)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for m in res.result.members.values() for p in m.parameters())


def test_bf16_learns_what_fp32_learns(tiny_data, tmp_path: Path) -> None:
    fp32 = train_run(_cfg(None), tmp_path / "fp32", tiny_data).metrics["test"]
    bf16 = train_run(_cfg("bf16"), tmp_path / "bf16", tiny_data).metrics["test"]
    for d in ("A", "B", "C"):
        assert bf16[d]["auc"] == pytest.approx(fp32[d]["auc"], abs=0.03), (d, fp32[d]["auc"], bf16[d]["auc"])


def test_precision_is_validated() -> None:
    with pytest.raises(ConfigError, match="precision"):
        from crossctr.schema import validate_model

        validate_model(TrainConfig, {"precision": "fp8"}, "train")
