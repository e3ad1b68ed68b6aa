"""Data-parallel training under torchrun, and the seam where a sharded embedding plugs in.

    torchrun --nproc-per-node N -m crossctr train --config run.yaml --out DIR

Every rank holds the whole encoded dataset (as one process does), draws the same permutation
from the shared seed, and takes its own disjoint shard of every global batch: of each domain's
rows in the batch, rank r takes those at positions r, r + W, r + 2W, ... So all ranks run the
same number of steps (collectives never wait on a rank that has run out of data) and every
rank sees each domain in about the same proportion as the global batch.

Loss scaling. Each rank's batch carries a `Shard` (the global batch's size and rows per
domain, `crossctr.data.batch`); `crossctr.losses` scales every loss term with it so that DDP's
averaged gradient is the one-process gradient of the global batch. All terms sit in the same
backward as the click loss, so DDP reduces their gradients with everything else; nothing
trains in a separate step that DDP would miss.

Unused parameters. A private network of CNAN runs on its own domain's rows only, so on a rank
whose shard holds none of them it gets no gradient: DDP runs with `find_unused_parameters`,
which contributes zeros for it on that rank (its averaged gradient is then still the global
one); a parameter no rank used keeps no gradient, as in one process. A rank whose shard of a
(last, short) batch is empty runs the step on one borrowed row with its loss multiplied by 0.

Example (one process: no process group, world size 1):
    >>> DistInfo.current().world
    1
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from crossctr.schema import ConfigError

__all__ = [
    "DistInfo",
    "init_from_env",
    "shutdown",
    "shard_mask",
    "wrap_ddp",
    "unwrap",
    "gather_rows",
    "any_rank",
    "EmbeddingLookup",
    "replace_embedding",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the process group; world 1 without one."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, writes checkpoints and the run folder."""
        return self.rank == 0

    @classmethod
    def current(cls) -> DistInfo:
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Without those variables (a plain `crossctr train`) nothing happens and world is 1. The
    backend is nccl when training runs on CUDA, gloo on CPU.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError("RANK/WORLD_SIZE are set (torchrun) but this PyTorch build has no torch.distributed")
    if dist.is_initialized():
        return DistInfo.current()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {device!r} but no CUDA device is available; use 'cpu' or 'auto'")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    info = DistInfo.current()
    log.info("rank %d of %d (local rank %d), backend %s", info.rank, info.world, info.local_rank, dist.get_backend())
    return info


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_mask(domain: Tensor, n_domains: int, rank: int, world: int) -> Tensor:
    """(B,) domain ids of a global batch -> (B,) bool: the rows rank `rank` of `world` trains on.

    Of each domain's rows, in batch order, rank r gets positions r, r + W, ...: disjoint shards
    that together cover the batch, each domain spread evenly.

    Example:
        >>> shard_mask(torch.tensor([0, 0, 1, 0, 1]), 2, 1, 2).tolist()
        [False, True, False, False, True]
    """
    onehot = F.one_hot(domain, n_domains)  # (B, N)
    within = (onehot.cumsum(0) * onehot).sum(1) - 1  # (B,) position of each row among its domain's rows
    return within % world == rank


def wrap_ddp(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around `model` when world > 1, else `model` itself."""
    if info.world == 1:
        return model
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    # find_unused_parameters: a private network gets no rows on some ranks in some steps.
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gather_rows(values: Tensor, n_total: int, info: DistInfo, device: torch.device) -> Tensor:
    """Concatenate each rank's contiguous chunk of `n_total` rows (rank order) on every rank.

    Rank r holds rows [r·c, min((r+1)·c, n_total)) with c = ⌈n_total / W⌉; chunks are padded to
    c rows for `all_gather` and the padding is dropped.
    """
    if info.world == 1:
        return values
    chunk = -(-n_total // info.world)
    padded = torch.zeros(chunk, dtype=values.dtype, device=device)
    padded[: len(values)] = values.to(device)
    parts = [torch.empty_like(padded) for _ in range(info.world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:n_total].cpu()


def any_rank(flags: Tensor, info: DistInfo) -> Tensor:
    """Element-wise OR of a small int/bool flag vector over the ranks (itself when world is 1)."""
    if info.world == 1:
        return flags
    out = flags.to(torch.int32).clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out.bool()


@runtime_checkable
class EmbeddingLookup(Protocol):
    """What a model needs of its embedding: the seam where a sharded table replaces `FeatureEmbedding`.

    `forward(x, domain)` maps (B, S) local ids (one column per feature, several slots for a
    multi-valued one) and (B,) domain ids to (B, F, K) embeddings, K = `out_dim` (shared ⊕
    domain-specific, 72 in the paper). Nothing else of the
    model touches the tables, so a model-parallel implementation (TorchRec's sharded
    EmbeddingCollection over a distributed table, see docs/scaling.md) can stand in as long as
    it returns the same (B, F, K) block for the rank's rows.
    """

    out_dim: int

    def forward(self, x: Tensor, domain: Tensor) -> Tensor: ...


def replace_embedding(model: nn.Module, embedding: nn.Module, attr: str = "embedding") -> EmbeddingLookup:
    """Swap `model.<attr>` for another `EmbeddingLookup` with the same `out_dim`; returns the old one."""
    old = getattr(model, attr, None)
    if not isinstance(old, EmbeddingLookup):
        raise ConfigError(
            f"{type(model).__name__}.{attr} is not an embedding lookup (forward(x, domain) -> (B, F, K) with out_dim)"
        )
    if not isinstance(embedding, EmbeddingLookup):
        raise ConfigError(
            f"{type(embedding).__name__} does not satisfy EmbeddingLookup: "
            "it needs out_dim and forward(x, domain) -> (B, F, K)"
        )
    if embedding.out_dim != old.out_dim:
        raise ConfigError(
            f"replacement embedding has out_dim {embedding.out_dim}, the model was built for {old.out_dim}"
        )
    setattr(model, attr, embedding)
    return old
