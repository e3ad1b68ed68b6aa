"""CNAN-AT's attention against the simulator's planted truth (paper Figure 4).

The simulator plants brand as the strong signal on the high-end platform B and price on the
low-end platform C. What the attention picks up is weak: eq. 2's first FCN layer already
weighs each feature position, so eq. 1's per-feature scalar is partly redundant and moves
little from its starting value (differences of 0.001-0.01 between feature groups in our
runs). The contrast between B and C is what held in every run; the per-platform ranking
held in most, not all, and is pinned here for one seed in a slow test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossctr.data.dataset import prepare
from crossctr.data.simulator import SimulatorConfig, write_simulated_dataset
from crossctr.schema import DatasetSchema
from crossctr.training.run import RunConfig, train_run

MODEL = {
    "name": "cnan",
    "shared_dim": 16,
    "specific_dim": 4,
    "attention_hidden": [16, 8],
    "deep": [64, 32],
    "embedding_init_std": 0.1,
}


def _brand_minus_price(tmp_path: Path, rows: int, epochs: int) -> dict[str, float]:
    yaml_path = write_simulated_dataset(tmp_path / "data", SimulatorConfig(rows=rows, seed=2))
    data = prepare(DatasetSchema.from_yaml(yaml_path), yaml_path.parent)
    cfg = RunConfig(
        dataset=str(yaml_path),
        model=MODEL,
        train={"epochs": epochs, "patience": epochs, "batch_size": 512, "threads": 1, "progress": False},
    )
    att = train_run(cfg, tmp_path / "run", data).attention
    groups, per_group = att["groups"], np.asarray(att["attention_private"]["per_group"])
    b, p = groups.index("brand"), groups.index("price")
    return {d: float(per_group[i, b] - per_group[i, p]) for i, d in enumerate(att["domains"])}


def test_attention_contrast_between_high_end_and_low_end_platform(tmp_path: Path) -> None:
    diff = _brand_minus_price(tmp_path, rows=60_000, epochs=2)
    assert diff["B"] > diff["C"], diff  # brand gains on price more on B than on C


@pytest.mark.slow
def test_attention_ranks_brand_on_b_and_price_on_c(tmp_path: Path) -> None:
    diff = _brand_minus_price(tmp_path, rows=100_000, epochs=2)
    assert diff["B"] > 0 > diff["C"], diff
