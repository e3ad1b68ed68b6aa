"""prepare_bench's data-wait part trains with the library's loss (`crossctr.losses.Objective`), not a copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from crossctr.data.prepare import PrepareOptions, prepare_dataset
from crossctr.losses import Objective

BENCH_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "prepare_bench.py"


def test_data_wait_steps_go_through_the_objective(
    tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("prepare_bench", BENCH_PY)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    prepared = tiny_dataset_dir / "prepared"
    prepare_dataset(tiny_dataset_dir / "dataset.yaml", prepared, PrepareOptions(progress=False))

    calls: list[tuple[float, dict[str, float]]] = []
    original = Objective.__call__

    def spy(self: Objective, out, batch):  # type: ignore[no-untyped-def]
        total, terms = original(self, out, batch)
        calls.append((float(total.detach()), {k: float(v) for k, v in terms.items()}))
        return total, terms

    monkeypatch.setattr(Objective, "__call__", spy)
    torch.manual_seed(0)
    bench.bench_data_wait(prepared, steps=2, batch_size=64)
    assert len(calls) == 2 + 5  # every step, warm-up included
    total, terms = calls[0]
    # CNAN-AT's auxiliary terms are in the loss, weighted as the library's default config weighs them.
    assert {"click", "adv", "disc", "domain"} <= terms.keys()
    weights = {"adv": 0.05, "domain": 0.05, "disc": 1.0}
    assert total == pytest.approx(terms["click"] + sum(w * terms[k] for k, w in weights.items()), rel=1e-5)
    assert "% of training time waiting for data" in capsys.readouterr().out
