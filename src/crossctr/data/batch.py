"""What crosses the data/model boundary: a `Batch` of index tensors (torch only, no pyarrow).

Models import `Batch` from here, so importing a model never loads the table readers of
`crossctr.data.dataset` (which re-exports it). A batch that is one rank's shard of a
data-parallel global batch carries a `Shard`: what the loss needs to know of the global batch
(`crossctr.losses` explains the scaling).

Example:
    >>> b = Batch(torch.tensor([[3, 4], [1, 2]]), torch.tensor([0, 2]), torch.tensor([1.0, 0.0]))
    >>> len(b), b.shard is None
    (2, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Batch", "Shard"]


@dataclass(frozen=True)
class Shard:
    """The global batch a data-parallel shard was cut from (every rank knows it: same permutation)."""

    world: int  # W ranks
    rows: int  # B: rows of the global batch
    domain_rows: torch.Tensor  # (N,) int64 rows of each domain in the global batch
    task_rows: torch.Tensor | None = None  # (T, N) int64 rows of each domain carrying each extra label

    def to(self, device: torch.device | str) -> Shard:
        tasks = None if self.task_rows is None else self.task_rows.to(device, non_blocking=True)
        return Shard(self.world, self.rows, self.domain_rows.to(device, non_blocking=True), tasks)


@dataclass
class Batch:
    """Per-feature ids, domain ids and 0/1 labels of B rows."""

    features: torch.Tensor  # (B, F) int
    domain: torch.Tensor  # (B,) int64
    label: torch.Tensor  # (B,) float32
    tasks: torch.Tensor | None = None  # (B, T) float32 extra 0/1 labels (multi-task), NaN: none
    shard: Shard | None = None  # data-parallel training only: the global batch this is a shard of

    def to(self, device: torch.device | str) -> Batch:
        tasks = None if self.tasks is None else self.tasks.to(device, non_blocking=True)
        shard = None if self.shard is None else self.shard.to(device)
        return Batch(
            self.features.to(device, non_blocking=True),
            self.domain.to(device, non_blocking=True),
            self.label.to(device, non_blocking=True),
            tasks,
            shard,
        )

    def __len__(self) -> int:
        return self.label.shape[0]
