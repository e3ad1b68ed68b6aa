"""`Batch` lives in a light module: importing and building models does not load pyarrow."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from crossctr.data import dataset
from crossctr.data.batch import Batch, Shard

_IMPORT_MODELS = """
import sys
import torch
from crossctr.models import REGISTRY, build_model, parse_model_config
from crossctr.data.batch import Batch

assert "pyarrow" not in sys.modules, "import crossctr.models loaded pyarrow"
batch = Batch(torch.tensor([[1, 2], [3, 1]]), torch.tensor([0, 1]), torch.tensor([1.0, 0.0]))
for name in sorted(REGISTRY):
    model = build_model(parse_model_config({"name": name}), [5, 7], 2).eval()
    assert model(batch).logits.shape == (2,), name
loaded = sorted(m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow."))
print("MODELS", len(REGISTRY), "PYARROW", loaded)
"""


def test_importing_and_building_every_model_does_not_import_pyarrow() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_MODELS],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "PYARROW []" in out.stdout, out.stdout
    assert int(out.stdout.split("MODELS")[1].split()[0]) >= 10  # every registered model was built


def test_dataset_re_exports_the_same_batch() -> None:
    assert dataset.Batch is Batch and dataset.Shard is Shard


def test_to_moves_every_tensor_including_the_shard() -> None:
    shard = Shard(2, 10, torch.tensor([6, 4]), torch.tensor([[5, 3]]))
    b = Batch(torch.zeros(3, 2, dtype=torch.int32), torch.tensor([0, 1, 1]), torch.ones(3), torch.zeros(3, 1), shard)
    moved = b.to("cpu")
    assert len(moved) == 3 and moved.shard is not None
    assert moved.shard.world == 2 and moved.shard.rows == 10
    assert torch.equal(moved.shard.domain_rows, shard.domain_rows) and torch.equal(
        moved.shard.task_rows, shard.task_rows
    )
    assert torch.equal(moved.tasks, b.tasks) and Batch(b.features, b.domain, b.label).to("cpu").shard is None


def test_an_encoded_split_hands_its_shard_to_the_batch() -> None:
    split = dataset.EncodedSplit.from_numpy(
        torch.arange(8).view(4, 2).numpy(), torch.tensor([0, 1, 0, 1]).numpy(), torch.ones(4).numpy()
    )
    shard = Shard(2, 4, torch.tensor([2, 2]))
    b = split.batch(torch.tensor([0, 2]), shard)
    assert b.shard is shard and b.domain.tolist() == [0, 0] and b.tasks is None
    assert split.batch(slice(0, 2)).shard is None and split.as_batch().shard is None
