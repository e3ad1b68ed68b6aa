"""Data-parallel training: 2 gloo ranks over a global batch train the same model as 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from crossctr.data.batch import Shard
from crossctr.layers.embedding import FeatureEmbedding
from crossctr.losses import DomainWeights, click_loss, per_domain_mean
from crossctr.models import CNANConfig, build_model
from crossctr.schema import ConfigError
from crossctr.training.distributed import EmbeddingLookup, replace_embedding, shard_mask

SMALL = {"shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [32, 16]}


def test_shards_are_disjoint_cover_the_batch_and_spread_each_domain() -> None:
    dom = torch.randint(0, 3, (101,), generator=torch.Generator().manual_seed(0))
    masks = [shard_mask(dom, 3, r, 3) for r in range(3)]
    assert torch.equal(torch.stack(masks).sum(0), torch.ones(101, dtype=torch.long))  # each row on exactly one rank
    for d in range(3):
        per_rank = [int((m & (dom == d)).sum()) for m in masks]
        assert max(per_rank) - min(per_rank) <= 1


@pytest.mark.parametrize("weighting", ["equal", "rows"])
def test_rank_losses_average_to_the_global_batch_loss(weighting: str) -> None:
    g = torch.Generator().manual_seed(1)
    logits, label = torch.randn(37, generator=g), (torch.rand(37, generator=g) < 0.3).float()
    dom = torch.randint(0, 3, (37,), generator=g)
    counts = torch.bincount(dom, minlength=3)
    ranks = [shard_mask(dom, 3, r, 2) for r in range(2)]
    shard = Shard(2, 37, counts)
    # each rank's row-mean form times W·B_r/B (losses.shard_share)
    w = DomainWeights(3, weighting)
    per_rank = [click_loss(logits[m], label[m], dom[m], w, shard) * (2 * int(m.sum()) / 37) for m in ranks]
    assert torch.allclose(sum(per_rank) / 2, click_loss(logits, label, dom, w), atol=1e-6)


def test_per_domain_means_of_shards_scaled_like_a_row_mean_add_up_to_the_global_value() -> None:
    """What CNAN's L_d relies on under DDP: Σ_r (W·B_r/B)·t_r / W equals the one-process value."""
    g = torch.Generator().manual_seed(2)
    values, dom = torch.rand(41, generator=g), torch.randint(0, 3, (41,), generator=g)
    dom[:2] = 2  # domain 2's rows do not split evenly over the ranks
    counts = torch.bincount(dom, minlength=3)
    whole = per_domain_mean(values, dom, 3).sum()
    world = 2
    shares = []
    for r in range(world):
        m = shard_mask(dom, 3, r, world)
        t_r = per_domain_mean(values[m], dom[m], 3, Shard(world, 41, counts)).sum()
        shares.append(world * int(m.sum()) / 41 * t_r)  # the trainer's row-mean scaling
    assert torch.allclose(sum(shares) / world, whole, atol=1e-6)
    # Without the global counts each shard averages its own rows: not the global value.
    local = [
        world * int(m.sum()) / 41 * per_domain_mean(values[m], dom[m], 3).sum()
        for m in (shard_mask(dom, 3, r, world) for r in range(world))
    ]
    assert not torch.allclose(sum(local) / world, whole, atol=1e-4)


def test_embedding_is_a_replaceable_lookup(tiny_data) -> None:
    cards = tiny_data.encoder.cardinalities
    model = build_model(CNANConfig(**SMALL), cards, 3)
    assert isinstance(model.embedding, EmbeddingLookup)
    other = FeatureEmbedding(cards, 8, 2, 3, init_std=0.1)  # stands in for a sharded table
    replace_embedding(model, other)
    batch = tiny_data.valid.as_batch()
    assert model(batch).logits.shape == (len(batch),) and model.embedding is other
    with pytest.raises(ConfigError, match="out_dim 6, the model was built for 10"):
        replace_embedding(model, FeatureEmbedding(cards, 4, 2, 3))


def _run(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_gloo_ranks_match_one_process_and_validate_on_every_row(tiny_dataset_dir: Path, tiny_data) -> None:
    n_train = len(tiny_data.train)
    assert n_train % 141 == 1  # the last global batch has 1 row: rank 1's shard is empty there
    run = {
        "dataset": "dataset.yaml",
        # Default CNAN-AT: entropy adversary, discriminator step and the per-domain L_d term,
        # which divides by the global batch's rows per domain (Batch.shard).
        "model": {"name": "cnan", **SMALL},
        "train": {"epochs": 2, "batch_size": 141, "patience": 5, "progress": False, "threads": 1, "device": "cpu"},
    }
    (tiny_dataset_dir / "run.yaml").write_text(yaml.safe_dump(run))
    train = ["-m", "crossctr", "train", "--config", "run.yaml", "--out"]
    two = _run(
        ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *train, "two"], tiny_dataset_dir
    )
    one = _run([*train, "one"], tiny_dataset_dir)
    for p in (two, one):
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out

    a, b = (
        load_file(tiny_dataset_dir / "one" / "weights.safetensors"),
        load_file(tiny_dataset_dir / "two" / "weights.safetensors"),
    )
    assert a.keys() == b.keys()
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    print(f"2 ranks vs 1 process: largest weight difference {diff:.1e}")
    assert diff < 1e-5, diff  # float summation order only (measured ~1e-7)

    hist_one = json.loads((tiny_dataset_dir / "one" / "history.json").read_text())["joint"]
    hist_two = json.loads((tiny_dataset_dir / "two" / "history.json").read_text())["joint"]
    for e1, e2 in zip(hist_one, hist_two, strict=True):
        # Validation inside the fit: each rank scored its chunk, the scores were gathered.
        assert e2["valid"]["overall"]["rows"] == len(tiny_data.valid)
        assert sum(e2["valid"][d]["rows"] for d in "ABC") == len(tiny_data.valid)
        assert e2["valid_mean_auc"] == pytest.approx(e1["valid_mean_auc"], abs=1e-4)
        for term, v in e1["train_loss"].items():
            assert e2["train_loss"][term] == pytest.approx(v, rel=1e-5)
    metrics = json.loads((tiny_dataset_dir / "two" / "metrics.json").read_text())
    assert metrics["valid"]["overall"]["rows"] == len(tiny_data.valid)
    # Rank 0 alone wrote the run folder and the checkpoint: no stray files from rank 1.
    assert sorted(p.name for p in (tiny_dataset_dir / "two" / "checkpoint").iterdir()) == [
        "fit-0.safetensors",
        "state.safetensors",
    ]
