"""The click loss: the thin wrapper that turns a model's logits into the paper's Σ_d Loss_d."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossctr.layers.domain_ops import per_domain_mean

__all__ = ["click_loss"]


def click_loss(logits: torch.Tensor, label: torch.Tensor, domain: torch.Tensor, n_domains: int, weighting: str = "equal") -> torch.Tensor:
    """Σ_d ½·mean_{i in d} BCE(logit_i, y_i) (paper §2.2), or ½·mean over all rows for `weighting="rows"`."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), label, reduction="none")  # (B,)
    if weighting == "rows":
        return 0.5 * bce.mean()
    return 0.5 * per_domain_mean(bce, domain, n_domains).sum()
