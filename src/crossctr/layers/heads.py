"""Per-domain output heads, paper: ŷ^d = sigmoid(W_c^d O^c + W^d O^d + b^d).

Each domain d has its own weights over the concatenated inputs [O^c ⊕ O^d] and its own bias.
All heads are stored stacked, (n_domains, n_inputs · in_dim), and each row takes the logit of
its domain's head, so a mixed-domain batch needs no per-domain loop:

    logit_i = <[r_1 ⊕ … ⊕ r_n]_i, W[d_i]> + b[d_i] = (Σ_k r_k W_kᵀ)[i, d_i] + b[d_i]

The right side computes every head on every row (n_domains logits, one small matmul per input
block W_k of W) and picks one: cheaper than gathering a (B, n_inputs · in_dim) copy of head
weights and concatenating the inputs, for the few domains a model has.

Returns logits; the sigmoid belongs to the loss (BCE with logits) or to prediction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from crossctr.layers.fast import linear

__all__ = ["DomainHeads"]


class DomainHeads(nn.Module):
    """One linear logit head per domain over n_inputs representations of size in_dim.

    Args:
        in_dim: size of each representation (all inputs share it).
        n_domains: number of domains, i.e. of heads.
        n_inputs: number of representations per row (2 for O^c and O^d).

    Example:
        >>> heads = DomainHeads(4, n_domains=3, n_inputs=2)
        >>> heads(torch.randn(5, 4), torch.randn(5, 4), domain=torch.tensor([0, 2, 1, 0, 2])).shape
        torch.Size([5])
    """

    def __init__(self, in_dim: int, n_domains: int, n_inputs: int = 1) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim!r}")
        if n_domains < 1:
            raise ValueError(f"n_domains must be >= 1, got {n_domains!r}")
        if n_inputs < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs!r}")
        self.in_dim = in_dim
        self.n_domains = n_domains
        self.n_inputs = n_inputs
        fan_in = n_inputs * in_dim
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default init, per head
        self.weight = nn.Parameter(torch.empty(n_domains, fan_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n_domains))

    def forward(self, *reps: Tensor, domain: Tensor | None = None) -> Tensor:
        """reps: n_inputs tensors (B, in_dim); domain: (B,) -> logits (B,).

        `domain` may be passed by keyword or as the last positional argument.
        """
        if domain is None:
            if not reps:
                raise TypeError("DomainHeads.forward needs the representations and a domain tensor")
            reps, domain = reps[:-1], reps[-1]
        if len(reps) != self.n_inputs:
            raise ValueError(
                f"DomainHeads was built with n_inputs={self.n_inputs} but got {len(reps)} "
                "representations; pass one (B, in_dim) tensor per input, then domain"
            )
        z: Tensor | None = None  # (B, n_domains): every head's logit on every row
        for r, w in zip(reps, self.weight.split(self.in_dim, dim=1), strict=False):  # w: (n_domains, in_dim)
            z = linear(r, w) if z is None else z + linear(r, w)
        assert z is not None  # n_inputs >= 1 (checked when built) representations were added
        return z.gather(1, domain.unsqueeze(1)).squeeze(1) + self.bias[domain]  # (B,)
