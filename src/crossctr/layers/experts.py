"""Stacked expert MLPs, softmax gates and per-domain selection: the parts of MMoE and PLE.

n small MLPs that see the same input (experts) or one input each (per-domain towers) are
kept as stacked parameters W_l (n, in, out), b_l (n, out), so all of them run in one
einsum per layer instead of a Python loop over modules:

    h_{l+1}[b, j] = act(h_l[b, j] W_l[j] + b_l[j])          j = 1..n

A gate is a one-layer member of such a stack followed by a softmax over the experts,

    g_k(x) = softmax(W_k x + b_k)                            (MMoE eq. 5)

and `take_domain` keeps, for each row, the slice of its own domain: (B, N, ...) -> (B, ...).
`ExtractionLayer` is one Customized Gate Control level of PLE (Tang et al. 2020) built on them.
Computing every domain's tower on every row and then picking costs N times a single
tower, which is small next to the embeddings and experts for the few domains of
multi-domain CTR; it keeps the backward exact: a row only sends gradient to its own slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossctr.layers.mlp import Activation, make_activation

__all__ = ["StackedMLP", "SoftmaxGates", "ExtractionLayer", "take_domain", "logit_towers"]


def take_domain(x: Tensor, domain: Tensor) -> Tensor:
    """x: (B, N, ...) one slice per domain, domain: (B,) -> (B, ...) each row's own slice.

    Example:
        >>> take_domain(torch.arange(6.0).view(2, 3), torch.tensor([2, 0]))
        tensor([2., 3.])
    """
    return x[torch.arange(x.shape[0], device=x.device), domain]


class StackedMLP(nn.Module):
    """n independent MLPs of the same shape, run together.

    Args:
        n: number of members (experts, towers, gates).
        in_dim: size of each member's input.
        hidden: layer sizes, e.g. (256, 128); the same for every member.
        activation: activation after each layer ("relu", "sigmoid" or "tanh").
        dropout: dropout after each activation (0 disables it).
        activate_last: False leaves the last layer linear (a tower ending in a logit).
        batch_norm: BatchNorm after each activated layer's linear map, with statistics over the
            whole batch for each member (as `MLP(batch_norm=True)` run once per member).

    Input (B, in_dim) is read by every member; input (B, n, in_dim) gives member j the
    slice [:, j]. Output (B, n, hidden[-1]).

    Example:
        >>> StackedMLP(4, 6, (8, 5))(torch.randn(3, 6)).shape
        torch.Size([3, 4, 5])
        >>> StackedMLP(2, 6, (1,), activate_last=False)(torch.randn(3, 2, 6)).shape
        torch.Size([3, 2, 1])
    """

    def __init__(
        self,
        n: int,
        in_dim: int,
        hidden: Sequence[int],
        activation: Activation = "relu",
        dropout: float = 0.0,
        activate_last: bool = True,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim!r}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of sizes >= 1, got {list(hidden)!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.n, self.in_dim, self.activate_last = n, in_dim, activate_last
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        n_norm = len(hidden) if activate_last else len(hidden) - 1
        self.norms = nn.ModuleList(nn.BatchNorm1d(n * int(h)) for h in list(hidden)[:n_norm]) if batch_norm else None
        d = in_dim
        for h in map(int, hidden):
            bound = 1.0 / math.sqrt(d)  # nn.Linear's default init, per member
            self.weights.append(nn.Parameter(torch.empty(n, d, h).uniform_(-bound, bound)))  # (n, in, out)
            self.biases.append(nn.Parameter(torch.empty(n, h).uniform_(-bound, bound)))  # (n, out)
            d = h
        self.out_dim = d

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_dim) or (B, n, in_dim) -> (B, n, out_dim)."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=False)):  # a loop over layers, not members
            eq = "bi,nio->bno" if x.ndim == 2 else "bni,nio->bno"
            x = torch.einsum(eq, x, w) + b  # (B, n, out)
            if i < last or self.activate_last:
                if self.norms is not None:
                    x = self.norms[i](x.flatten(1)).view_as(x)  # (B, n * out) normalised per member and unit
                x = self.act(x)
                if self.dropout is not None:
                    x = self.dropout(x)
        return x


def logit_towers(
    n: int, in_dim: int, hidden: Sequence[int], dropout: float = 0.0, batch_norm: bool = False
) -> StackedMLP:
    """n per-domain towers, each ending in a linear logit: (B, in_dim) or (B, n, in_dim) -> (B, n, 1).

    The head of Shared-Bottom, MMoE and PLE; `take_domain` then keeps each row's own tower.

    Example:
        >>> logit_towers(3, 6, (4,))(torch.randn(2, 6)).shape
        torch.Size([2, 3, 1])
    """
    return StackedMLP(n, in_dim, (*hidden, 1), dropout=dropout, activate_last=False, batch_norm=batch_norm)


class SoftmaxGates(nn.Module):
    """n_gates linear gates, each a softmax over n_experts: g_k(x) = softmax(W_k x + b_k).

    Input (B, in_dim) is read by every gate; (B, n_gates, in_dim) gives gate k the slice [:, k].

    Example:
        >>> g = SoftmaxGates(6, n_gates=3, n_experts=4)(torch.randn(2, 6))
        >>> g.shape, torch.allclose(g.sum(-1), torch.ones(2, 3))
        (torch.Size([2, 3, 4]), True)
    """

    def __init__(self, in_dim: int, n_gates: int, n_experts: int) -> None:
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {n_experts!r}")
        self.logits = StackedMLP(n_gates, in_dim, (n_experts,), activate_last=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_dim) or (B, n_gates, in_dim) -> (B, n_gates, n_experts), rows summing to 1."""
        return torch.softmax(self.logits(x), dim=-1)


class ExtractionLayer(nn.Module):
    """One CGC level of PLE (Tang et al., RecSys 2020, eq. 1-5) with the domains as its tasks.

    n_shared shared experts and n_specific experts per domain. Domain k's gate mixes the shared
    experts and domain k's own; with `shared_gate` (every level but the last) a shared gate mixes
    all experts into the shared output that the next level's shared experts read:
        y^k = Σ_i g^k_i(x^k) E_i(x^{src(i)}),  i over shared ∪ experts of k
        y^s = Σ_i g^s_i(x^s) E_i(x^{src(i)}),  i over all experts
    x^k and x^s are the previous level's outputs (all equal to the input at the first level).

    Args:
        in_dim: size of each input.
        n_domains: N.
        n_shared: shared experts.
        n_specific: experts of each domain.
        hidden: hidden sizes of every expert.
        shared_gate: also output the shared mixture (False at the last level).
        dropout: dropout inside the experts.
        batch_norm: BatchNorm inside the experts.

    Input (B, in_dim) at the first level, or (B, N + 1, in_dim): domains 0..N-1, then shared.
    Output (B, N + 1, H) with `shared_gate`, else (B, N, H).

    Example:
        >>> level = ExtractionLayer(6, n_domains=3, n_shared=2, n_specific=1, hidden=(5,))
        >>> level(torch.randn(4, 6)).shape, level(torch.randn(4, 4, 6)).shape
        (torch.Size([4, 4, 5]), torch.Size([4, 4, 5]))
    """

    def __init__(
        self,
        in_dim: int,
        n_domains: int,
        n_shared: int,
        n_specific: int,
        hidden: Sequence[int],
        shared_gate: bool = True,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if n_domains < 1 or n_shared < 0 or n_specific < 0 or n_shared + n_specific < 1:
            raise ValueError(
                f"need n_domains >= 1 and at least one expert per gate, got n_domains={n_domains}, "
                f"n_shared={n_shared}, n_specific={n_specific}"
            )
        N, S, P = n_domains, n_shared, n_specific
        self.n_domains = N
        self.experts = StackedMLP(
            S + N * P, in_dim, hidden, dropout=dropout, batch_norm=batch_norm
        )  # shared first, then domain by domain
        self.out_dim = self.experts.out_dim
        # Input slot each expert reads: the shared slot N, or its domain's slot k.
        src = [N] * S + [k for k in range(N) for _ in range(P)]
        # Experts domain k's gate mixes: the shared ones and its own.
        own = [list(range(S)) + list(range(S + k * P, S + (k + 1) * P)) for k in range(N)]
        self.src: Tensor
        self.own: Tensor
        self.register_buffer("src", torch.tensor(src, dtype=torch.int64), persistent=False)  # (S + N P,)
        self.register_buffer("own", torch.tensor(own, dtype=torch.int64), persistent=False)  # (N, S + P)
        self.domain_gates = SoftmaxGates(in_dim, N, S + P)
        self.shared_gate = SoftmaxGates(in_dim, 1, S + N * P) if shared_gate else None

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_dim) or (B, N + 1, in_dim) -> (B, N + 1, H) or (B, N, H)."""
        first = x.ndim == 2
        h = self.experts(x if first else x[:, self.src])  # (B, S + N P, H) each expert on its own input
        g = self.domain_gates(x if first else x[:, : self.n_domains])  # (B, N, S + P)
        y = torch.einsum("bnk,bnkh->bnh", g, h[:, self.own])  # (B, N, H) each domain's mixture
        if self.shared_gate is None:
            return y
        gs = self.shared_gate(x if first else x[:, self.n_domains])  # (B, 1, S + N P)
        return torch.cat([y, torch.einsum("bgk,bkh->bgh", gs, h)], dim=1)  # (B, N + 1, H)
