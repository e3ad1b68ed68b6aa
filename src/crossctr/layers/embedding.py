"""Shared and domain-specific embeddings for all categorical features, one table per scope.

Each feature value v of feature f has a shared embedding e_c (seen by every domain) and, per
domain d, a specific embedding e_d; a row of domain d uses e = e_c ⊕ e_d (paper section 2).
All features live in one table: feature f's local id x is shifted by offsets[f] =
sum(cardinalities[:f]), so a batch is one gather, with no per-field module or loop. The
per-domain tables are stacked in one table too, indexed by d * total + (x + offsets[f]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["FeatureEmbedding"]


class FeatureEmbedding(nn.Module):
    """Embeds (B, F) local feature ids of rows from any domain into (B, F, K_c + K_s).

    Args:
        cardinalities: number of ids of each feature (vocabulary incl. reserved ids).
        shared_dim: K_c, size of the shared embedding (paper: 64).
        specific_dim: K_s, size of the domain-specific embedding (paper: 8); 0 disables it
            (the CNAN₁ ablation), then the output is e_c alone.
        n_domains: number of domains, i.e. of specific tables.
        init_std: standard deviation of the normal initialisation.
        sparse: make the tables produce sparse gradients (for sparse/lazy optimisers).

    Example:
        >>> emb = FeatureEmbedding([3, 5], shared_dim=4, specific_dim=2, n_domains=2)
        >>> x = torch.tensor([[0, 4], [2, 1]])
        >>> emb(x, torch.tensor([0, 1])).shape
        torch.Size([2, 2, 6])
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        shared_dim: int,
        specific_dim: int,
        n_domains: int,
        init_std: float = 0.01,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        cards = [int(c) for c in cardinalities]
        if not cards or any(c < 1 for c in cards):
            raise ValueError(
                f"cardinalities must be a non-empty sequence of ints >= 1, got {list(cardinalities)!r}"
            )
        if shared_dim < 1:
            raise ValueError(f"shared_dim must be >= 1, got {shared_dim!r}")
        if specific_dim < 0:
            raise ValueError(f"specific_dim must be >= 0 (0 disables it), got {specific_dim!r}")
        if n_domains < 1:
            raise ValueError(f"n_domains must be >= 1, got {n_domains!r}")
        if not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std!r}")
        self.cardinalities = tuple(cards)
        self.shared_dim = shared_dim
        self.specific_dim = specific_dim
        self.n_domains = n_domains
        self.total = sum(cards)
        offsets = torch.tensor([0, *cards[:-1]], dtype=torch.int64).cumsum(0)
        self.register_buffer("offsets", offsets)  # (F,)
        self.shared = nn.Embedding(self.total, shared_dim, sparse=sparse)
        nn.init.normal_(self.shared.weight, 0.0, init_std)
        self.specific: nn.Embedding | None = None
        if specific_dim > 0:
            self.specific = nn.Embedding(n_domains * self.total, specific_dim, sparse=sparse)
            nn.init.normal_(self.specific.weight, 0.0, init_std)

    @property
    def out_dim(self) -> int:
        """K = K_c + K_s, the size of one feature's embedding."""
        return self.shared_dim + self.specific_dim

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:
        """x: (B, F) local ids per feature; domain: (B,) domain ids -> (B, F, K)."""
        idx = x + self.offsets  # (B, F) global ids in the shared table
        e_c = self.shared(idx)  # (B, F, K_c)
        if self.specific is None:
            return e_c
        e_d = self.specific(domain.unsqueeze(1) * self.total + idx)  # (B, F, K_s)
        return torch.cat([e_c, e_d], dim=-1)  # (B, F, K_c + K_s)
