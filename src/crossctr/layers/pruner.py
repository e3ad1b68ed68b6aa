"""Domain-adaptive pruner of AdaSparse (Yang et al., CIKM 2022, §3.2): neuron-level weighting factors.

A layer's neurons h (B, D) are reweighted by factors π computed from the domain's embedding
e_d and the neurons themselves; small factors are set to zero, so each domain (and row)
keeps a sparse sub-network:
    v  = W [e_d ⊕ h]                       one linear map, no bias (as Scenario-Wise-Rec)
    π  = 𝟙[σ(α v) ≥ ε] · σ(α v)            "binarization": σ(α v) → step function as α grows
    π  = 𝟙[β σ(v) ≥ ε] · β σ(v)            "scaling": factors in (0, β), β ≥ 1 may amplify
    π  = 𝟙[β σ(α v) ≥ ε] · β σ(α v)        "fusion": both, the Scenario-Wise-Rec default
    h' = π ⊙ h
α is the caller's annealing temperature (AdaSparse raises it by a small step each training
step). The factors below ε are zeroed ("zero-out" in the paper); the kept ones pass their
gradient. Scenario-Wise-Rec multiplies by sign(π − ε) instead, which flips a sub-ε factor to
its negative rather than removing it; with ε = 0.01 that is rare, and zero is the paper's pruning.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from crossctr.layers.fast import linear

__all__ = ["PrunerForm", "DomainPruner", "weighting_factors"]

PrunerForm = Literal["binarization", "scaling", "fusion"]
PRUNER_FORMS: tuple[str, ...] = get_args(PrunerForm)


def weighting_factors(v: Tensor, form: PrunerForm, alpha: Tensor | float, beta: float, epsilon: float) -> Tensor:
    """Pruner logits v (B, D) -> weighting factors π (B, D), zero below ε.

    Example:
        >>> weighting_factors(torch.tensor([[0.0, -9.0]]), "fusion", 1.0, 2.0, 0.01)
        tensor([[1., 0.]])
    """
    if form == "binarization":
        pi = torch.sigmoid(alpha * v)  # (B, D) in (0, 1)
    elif form == "scaling":
        pi = beta * torch.sigmoid(v)  # (B, D) in (0, β)
    elif form == "fusion":
        pi = beta * torch.sigmoid(alpha * v)  # (B, D) in (0, β)
    else:
        raise ValueError(f"form must be one of {list(PRUNER_FORMS)}, got {form!r}")
    return torch.where(pi >= epsilon, pi, torch.zeros_like(pi))  # zero-out: pruned neurons


class DomainPruner(nn.Module):
    """Weighting factors for `out_dim` neurons from a domain embedding and the neurons' layer input.

    Args:
        domain_dim: size of the domain embedding e_d.
        in_dim: size of the neurons h the pruner reads (the neurons it weighs, or their fields).
        out_dim: number of factors; `in_dim` for neuron-level pruning, fewer for field-level.
        form: "binarization", "scaling" or "fusion".
        beta: β, the largest factor of the scaling forms (paper and Scenario-Wise-Rec: 2).
        epsilon: ε, factors below it are zeroed (Scenario-Wise-Rec: 0.01).

    Example:
        >>> p = DomainPruner(domain_dim=3, in_dim=5, out_dim=5)
        >>> p(torch.randn(2, 3), torch.randn(2, 5), alpha=1.0).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        domain_dim: int,
        in_dim: int,
        out_dim: int,
        form: PrunerForm = "fusion",
        beta: float = 2.0,
        epsilon: float = 1e-2,
    ) -> None:
        super().__init__()
        for name, v in (("domain_dim", domain_dim), ("in_dim", in_dim), ("out_dim", out_dim)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v!r}")
        if form not in PRUNER_FORMS:
            raise ValueError(f"form must be one of {list(PRUNER_FORMS)}, got {form!r}")
        if not beta > 0 or not epsilon >= 0:
            raise ValueError(f"need beta > 0 and epsilon >= 0, got beta={beta!r}, epsilon={epsilon!r}")
        self.form, self.beta, self.epsilon = form, beta, epsilon
        self.weight = nn.Parameter(
            nn.Linear(domain_dim + in_dim, out_dim, bias=False).weight.detach()
        )  # (out, domain + in)

    def forward(self, domain_emb: Tensor, h: Tensor, alpha: Tensor | float = 1.0) -> Tensor:
        """domain_emb (B, domain_dim), h (B, in_dim), α -> π (B, out_dim)."""
        v = linear(torch.cat([domain_emb, h], dim=1), self.weight)  # (B, out)
        return weighting_factors(v, self.form, alpha, self.beta, self.epsilon)
