"""Two gloo ranks shard CNAN-AT's tables with TorchRec (shared on one rank, specific on the
other) and score exactly as the unsharded model. Skipped where torchrec is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossctr.layers.torchrec_embedding import torchrec_available

pytestmark = pytest.mark.skipif(
    not torchrec_available(),
    reason="torchrec / fbgemm-gpu for this torch not installed (see docs/scaling.md to install it)",
)

SCRIPT = """
import json, torch, torch.distributed as dist
from crossctr.data.dataset import Batch
from crossctr.models import build_model, parse_model_config
from crossctr.training.torchrec_backend import shard, to_torchrec
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
cfg = parse_model_config(
    {"name": "cnan", "shared_dim": 8, "specific_dim": 4, "attention_hidden": [8, 4], "deep": [16, 8]}
)
ref = build_model(cfg, [9, 6, 12], 3).eval()
model = build_model(cfg, [9, 6, 12], 3).eval()
model.load_state_dict(ref.state_dict())
sharded = shard(to_torchrec(model))
g = torch.Generator().manual_seed(1)
x, d = torch.randint(1, 6, (40, 3), generator=g), torch.arange(40) % 3
mine = torch.arange(rank, 40, world)
with torch.no_grad():
    got = sharded(Batch(x[mine], d[mine], torch.zeros(len(mine)))).logits
    want = ref(Batch(x, d, torch.zeros(40))).logits[mine]
local = sorted(k for k, v in sharded.state_dict().items() if hasattr(v, "local_shards") and v.local_shards())
print(json.dumps({"rank": rank, "max_diff": float((got - want).abs().max()), "local_tables": local}))
dist.destroy_process_group()
"""


def test_two_ranks_shard_the_tables_and_score_like_one_process(tmp_path: Path) -> None:
    (tmp_path / "shard.py").write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "shard.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ranks = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(ranks) == 2 and all(r["max_diff"] < 1e-6 for r in ranks), ranks
    # table-wise: each rank holds one whole table
    assert sorted(t for r in ranks for t in r["local_tables"]) == [
        "embedding.tables.embedding_bags.shared.weight",
        "embedding.tables.embedding_bags.specific.weight",
    ]
