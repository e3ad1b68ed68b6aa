"""Row-wise Adagrad for embedding tables: one accumulator per row, updates only the rows a batch touches.

For each row r with gradient g_r (duplicates within the batch summed first):

    G_r ← G_r + mean_k g_r,k²          one float of state per row
    w_r ← w_r − lr · g_r / (√G_r + eps)

It is the embedding optimizer TorchRec/FBGEMM ship as EXACT_ROWWISE_ADAGRAD. Against
`SparseAdam` (two moment tensors of the table's size) its state is 1/D of one table, so a
table 100× larger still fits beside its optimizer, and its step is one gather and two
index_adds over the touched rows, no sparse-tensor arithmetic. A row no batch touches keeps
its weights and its accumulator: the update is lazy whether the gradient arrives sparse
(`nn.Embedding(sparse=True)`) or dense (a zero gradient row moves nothing).

Example:
    >>> import torch
    >>> emb = torch.nn.Embedding(5, 3, sparse=True)
    >>> opt = RowWiseAdagrad([emb.weight], lr=0.1)
    >>> emb(torch.tensor([1, 1, 3])).sum().backward()
    >>> before = emb.weight.detach().clone()
    >>> opt.step()
    >>> [int(r) for r in (emb.weight.detach() != before).any(1).nonzero()]
    [1, 3]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["RowWiseAdagrad", "optimizer_step"]


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row of 2-D parameters (embedding tables).

    Args:
        params: the tables, each (rows, dim); sparse or dense gradients.
        lr: step size (Adagrad's scale: larger than Adam's, e.g. 0.01 to 0.05).
        eps: added to √G_r, keeps the first step of a row finite.
        initial_accumulator_value: G_r before any step (0 = the first step moves each
            coordinate by lr · g/rms(g)).
    """

    def __init__(
        self, params: Iterable[Tensor], lr: float = 0.01, eps: float = 1e-8, initial_accumulator_value: float = 0.0
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if initial_accumulator_value < 0:
            raise ValueError(f"initial_accumulator_value must be >= 0, got {initial_accumulator_value!r}")
        super().__init__(params, {"lr": lr, "eps": eps, "initial_accumulator_value": initial_accumulator_value})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(
                        f"RowWiseAdagrad updates 2-D tables (rows, dim); got a parameter of shape {tuple(p.shape)}"
                    )

    def _state(self, p: Tensor, init: float) -> dict[str, Any]:
        st = self.state[p]
        if not st:
            st["step"] = torch.zeros((), dtype=torch.float32)
            st["sum"] = torch.full((p.shape[0],), float(init), dtype=torch.float32, device=p.device)  # (rows,)
        return st

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]  # torch overloads step on closure; one signature here
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self._state(p, group["initial_accumulator_value"])
                st["step"] += 1
                acc = st["sum"]
                g = p.grad
                if g.is_sparse:
                    g = g.coalesce()  # one row per touched id, duplicates summed
                    rows, vals = g.indices()[0], g.values()  # (U,), (U, D)
                    if rows.numel() == 0:
                        continue
                    acc.index_add_(0, rows, vals.float().pow(2).mean(1))
                    scale = acc[rows].sqrt_().add_(eps).reciprocal_().mul_(-lr)  # (U,)
                    p.index_add_(0, rows, (vals * scale.unsqueeze(1)).to(p.dtype))
                else:  # dense: rows with a zero gradient keep G_r and w_r unchanged
                    acc.add_(g.float().pow(2).mean(1))
                    scale = acc.sqrt().add_(eps).reciprocal_().mul_(-lr)  # (rows,)
                    p.add_((g * scale.unsqueeze(1)).to(p.dtype))
        return loss


def optimizer_step(
    loss: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer], check: Callable[[], None] | None = None
) -> None:
    """One update of a training step: clear every optimizer's gradients, backpropagate `loss`, run
    `check` (the trainer's finite test, between the gradients and the update), step every optimizer.

    The trainer, the ETA probe and the benchmarks take their steps through it, so they cannot drift apart.
    """
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if check is not None:
        check()
    for opt in optimizers:
        opt.step()
