"""Model-parallel embedding tables with TorchRec: swap a model's lookup, shard it, keep its weights.

    model = to_torchrec(model)              # FeatureEmbedding -> TorchRecEmbedding, same weights
    sharded = shard(model, device)          # DistributedModelParallel: tables sharded, rest data-parallel

`shard` plans with TorchRec's planner (table-wise on CPU, where its row- and column-wise
kernels do not exist; any plan on CUDA), builds `DistributedModelParallel` and copies the
model's table weights into this rank's shards, so the sharded model scores exactly as the
unsharded one. Training a sharded model through `Trainer` is not wired yet: TorchRec updates
sharded tables with an optimizer fused into the backward pass, and the trainer's Adam and
safetensors checkpoints expect plain tensors (docs/scaling.md).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from crossctr.layers.embedding import FeatureEmbedding
from crossctr.layers.torchrec_embedding import TorchRecEmbedding
from crossctr.schema import ConfigError
from crossctr.training.distributed import replace_embedding

__all__ = ["to_torchrec", "shard"]


def to_torchrec(model: nn.Module, attr: str = "embedding") -> nn.Module:
    """Replace `model.<attr>` (a FeatureEmbedding) by a TorchRecEmbedding holding the same weights."""
    old = getattr(model, attr, None)
    if not isinstance(old, FeatureEmbedding):
        raise ConfigError(f"{type(model).__name__}.{attr} is not a FeatureEmbedding; nothing to move to TorchRec")
    replace_embedding(model, TorchRecEmbedding.from_feature_embedding(old), attr)
    return model


def shard(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Shard the model's TorchRec tables over the process group; returns the DistributedModelParallel."""
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.types import ShardingType

    if not dist.is_initialized():
        raise ConfigError("shard() needs a process group: run under torchrun (gloo on CPU, NCCL on GPU)")
    device = torch.device(device)
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tables = [m for m in model.modules() if isinstance(m, TorchRecEmbedding)]
    if not tables:
        raise ConfigError("the model has no TorchRecEmbedding; call to_torchrec(model) first")
    constraints = None
    if device.type == "cpu":  # fbgemm's CPU kernels: table-wise only
        names = [t for m in tables for t in m.tables.embedding_bags]
        constraints = {t: ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value]) for t in names}
    sharder = EmbeddingBagCollectionSharder()
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(), compute_device=device.type), constraints=constraints
    )
    plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    sharded = DistributedModelParallel(model, device=device, plan=plan, sharders=[sharder])
    with torch.no_grad():  # DistributedModelParallel initialises its shards afresh: put the weights back
        for key, value in sharded.state_dict().items():
            source = full[key.removeprefix("module.")] if key.removeprefix("module.") in full else None
            if source is None or not hasattr(value, "local_shards"):
                continue
            for piece in value.local_shards():
                (r0, c0), (nr, nc) = piece.metadata.shard_offsets, piece.metadata.shard_sizes
                piece.tensor.copy_(source[r0 : r0 + nr, c0 : c0 + nc])
    return sharded
