"""The click loss: the thin wrapper that turns a model's logits into the paper's Σ_d Loss_d."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossctr.layers.domain_ops import per_domain_mean

__all__ = ["click_loss", "task_loss", "task_counts", "power_row_scale"]


def power_row_scale(domain_rows: torch.Tensor, power: float) -> torch.Tensor:
    """(N,) per-row factors that give domain d a total weight ∝ n_d^power in a row mean.

    A row of domain d gets (n_d / n)^(power - 1) / Σ_d' (n_d' / n)^power, so that the factors
    average 1 over the training rows: power 1 is the plain row mean, power 0 weighs every
    domain the same (the paper's form, divided by N).

    Example:
        >>> power_row_scale(torch.tensor([90.0, 10.0]), 1.0)
        tensor([1., 1.])
        >>> s = power_row_scale(torch.tensor([90.0, 10.0]), 0.0); (s * torch.tensor([0.9, 0.1])).tolist()
        [0.5, 0.5]
    """
    share = domain_rows.double() / domain_rows.sum()
    present = share > 0
    norm = (share[present] ** power).sum()
    scale = torch.where(present, share.clamp_min(1e-12) ** (power - 1.0) / norm, torch.zeros_like(share))
    return scale.float()


def click_loss(logits: torch.Tensor, label: torch.Tensor, domain: torch.Tensor, n_domains: int, weighting: str = "equal",
               row_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_d ½·mean_{i in d} BCE(logit_i, y_i) (paper §2.2), or ½·mean over all rows for `weighting="rows"`.

    `row_scale` (N,) multiplies each row's BCE by its domain's factor before the row mean
    (`weighting="power"`, see `power_row_scale`).
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), label, reduction="none")  # (B,)
    if row_scale is not None:
        return 0.5 * (bce * row_scale.to(bce.device, bce.dtype)[domain]).mean()
    if weighting == "rows":
        return 0.5 * bce.mean()
    return 0.5 * per_domain_mean(bce, domain, n_domains).sum()


def task_counts(tasks: torch.Tensor, domain: torch.Tensor, n_domains: int) -> torch.Tensor:
    """(T, N) rows of each domain that carry each extra label (NaN = no label)."""
    n_tasks = tasks.shape[1]
    has = ~torch.isnan(tasks)  # (B, T)
    flat = torch.arange(n_tasks, device=tasks.device) * n_domains + domain.unsqueeze(1)  # (B, T)
    return torch.bincount(flat[has], minlength=n_tasks * n_domains).view(n_tasks, n_domains)


def task_loss(
    logits: torch.Tensor,
    tasks: torch.Tensor,
    domain: torch.Tensor,
    n_domains: int,
    weighting: str = "equal",
    global_counts: torch.Tensor | None = None,
    world: int = 1,
) -> torch.Tensor:
    """Σ_t of the click loss's form for each extra label, over the rows that carry it.

    logits, tasks: (B, T). `global_counts` (T, N) and `world` (data-parallel): this rank's
    share scaled so that DDP's average is the global batch's value, as `sharded_click_loss`.
    """
    has = ~torch.isnan(tasks)
    bce = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(tasks), reduction="none") * has  # (B, T)
    counts = (task_counts(tasks, domain, n_domains) if global_counts is None else global_counts).to(bce.device, bce.dtype)
    if weighting == "rows":
        return (0.5 * world * bce.sum(0) / counts.sum(1).clamp_min(1)).sum()
    per_row = counts.t()[domain]  # (B, T): labelled rows of the row's domain, per task
    return (0.5 * world * bce / per_row.clamp_min(1)).sum()
