"""Parts of M3oE (Zhang et al., SIGIR 2024): LayerNorm expert stacks and the domain balance.

`StackedNormMLP` is `layers.experts.StackedMLP` with a LayerNorm after every linear layer, as
M3oE's experts (Linear → LayerNorm → ReLU): n members of one shape, stacked parameters, one
einsum per layer, each member normalised over its own features with its own scale and shift:
    h_{l+1}[b, j] = ReLU(LN_j(h_l[b, j] W_l[j] + b_l[j]))          j = 1..n

`balance_domains` is M3oE's domain-level fusion: a row of domain d reads its own domain
expert with weight w and every other domain's with the rest shared equally,
    D̃_d = w · D_d + (1 − w)/(N − 1) · Σ_{j≠d} D_j
         = (w − u) · D_d + u · Σ_j D_j,      u = (1 − w)/(N − 1)   (u = 0 for N = 1)
computed with one sum over domains and one gather, no loop over domains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossctr.layers.experts import take_domain

__all__ = ["StackedNormMLP", "balance_domains", "norm_block"]


def norm_block(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear → LayerNorm → ReLU: one layer of M3oE's bottom networks.

    Example:
        >>> norm_block(6, 4)(torch.randn(3, 6)).shape
        torch.Size([3, 4])
    """
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"in_dim and out_dim must be >= 1, got {in_dim!r} and {out_dim!r}")
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.ReLU())


class StackedNormMLP(nn.Module):
    """n independent Linear → LayerNorm → ReLU stacks of the same shape, run together.

    Args:
        n: number of members (experts, towers).
        in_dim: size of each member's input.
        hidden: layer sizes, the same for every member; every layer is normalised and activated.
        eps: LayerNorm's ε.

    Input (B, in_dim) is read by every member; (B, n, in_dim) gives member j the slice [:, j].
    Output (B, n, hidden[-1]).

    Example:
        >>> StackedNormMLP(3, 6, (8, 5))(torch.randn(2, 6)).shape
        torch.Size([2, 3, 5])
    """

    def __init__(self, n: int, in_dim: int, hidden: Sequence[int], eps: float = 1e-5) -> None:
        super().__init__()
        if n < 1 or in_dim < 1:
            raise ValueError(f"n and in_dim must be >= 1, got {n!r} and {in_dim!r}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of sizes >= 1, got {list(hidden)!r}")
        self.n, self.eps = n, eps
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        self.gains, self.shifts = nn.ParameterList(), nn.ParameterList()
        d = in_dim
        for h in map(int, hidden):
            bound = 1.0 / math.sqrt(d)  # nn.Linear's default init, per member
            self.weights.append(nn.Parameter(torch.empty(n, d, h).uniform_(-bound, bound)))  # (n, in, out)
            self.biases.append(nn.Parameter(torch.empty(n, h).uniform_(-bound, bound)))  # (n, out)
            self.gains.append(nn.Parameter(torch.ones(n, h)))  # (n, out) LayerNorm scale, per member
            self.shifts.append(nn.Parameter(torch.zeros(n, h)))  # (n, out) LayerNorm shift, per member
            d = h
        self.out_dim = d

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_dim) or (B, n, in_dim) -> (B, n, out_dim)."""
        # a loop over layers, not members
        for w, b, g, s in zip(self.weights, self.biases, self.gains, self.shifts, strict=False):
            eq = "bi,nio->bno" if x.ndim == 2 else "bni,nio->bno"
            x = torch.einsum(eq, x, w) + b  # (B, n, out)
            x = torch.relu(F.layer_norm(x, x.shape[-1:], eps=self.eps) * g + s)  # (B, n, out)
        return x


def balance_domains(experts: Tensor, domain: Tensor, own: Tensor | float) -> Tensor:
    """experts (B, N, H) every domain expert on every row, domain (B,), own weight w -> (B, H).

    Example:
        >>> D = torch.tensor([[[1.0], [2.0], [4.0]]])
        >>> balance_domains(D, torch.tensor([0]), 0.5)  # 0.5 · 1 + 0.25 · (2 + 4)
        tensor([[2.]])
    """
    N = experts.shape[1]
    other = (1.0 - own) / (N - 1) if N > 1 else 0.0 * own  # weight of each other domain's expert
    return (own - other) * take_domain(experts, domain) + other * experts.sum(1)  # (B, H)
