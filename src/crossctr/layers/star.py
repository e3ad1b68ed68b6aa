"""Star-topology FCN and Partitioned Normalization of STAR (Sheng et al., CIKM 2021, §4.2-4.3).

Star topology: every layer has shared weights W, b and, per domain p, weights W_p, b_p; a row
of domain p goes through
    W*_p = W ⊙ W_p,   b*_p = b + b_p,   out = act(x W*_p + b*_p)          (STAR eq. 3)
W_p starts at 1 and b_p at 0, so at initialisation every domain runs the shared network.
All N domains' layers run on every row as one einsum and each row keeps its own domain's
output: N times the cost of one layer, exact gradients, no loop over domains.

Partitioned Normalization: one normalisation whose scale, shift and statistics are split by domain,
    z' = (γ ⊙ γ_p) ⊙ (z − μ_p) / sqrt(σ²_p + ε) + (β + β_p)                (STAR eq. 2)
In the paper a training batch holds one domain, so batch statistics are that domain's; our
batches mix domains, so each row is normalised with the batch statistics of its own domain's
rows, which is the same thing when a batch holds one domain. Each domain keeps its own moving
mean and variance (momentum as BatchNorm), used in eval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossctr.layers.experts import take_domain
from crossctr.layers.mlp import Activation, make_activation

__all__ = ["StarLinear", "StarFCN", "PartitionedNorm"]


class StarLinear(nn.Module):
    """Linear layer with weights W ⊙ W_p and bias b + b_p for a row of domain p.

    Example:
        >>> StarLinear(4, 3, n_domains=2)(torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])).shape
        torch.Size([5, 3])
    """

    def __init__(self, in_dim: int, out_dim: int, n_domains: int) -> None:
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim), ("n_domains", n_domains)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v!r}")
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init for the shared part
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim).uniform_(-bound, bound))  # (in, out)
        self.bias = nn.Parameter(torch.zeros(out_dim))  # (out,)
        self.domain_weight = nn.Parameter(torch.ones(n_domains, in_dim, out_dim))  # (N, in, out)
        self.domain_bias = nn.Parameter(torch.zeros(n_domains, out_dim))  # (N, out)

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:
        """x: (B, in_dim), domain: (B,) -> (B, out_dim)."""
        w = self.weight * self.domain_weight  # (N, in, out) W ⊙ W_p for every domain
        y = take_domain(torch.einsum("bi,nio->bno", x, w), domain)  # (B, out) own domain's product
        return y + self.bias + self.domain_bias[domain]  # (B, out)


class StarFCN(nn.Module):
    """Star-topology layers of the given sizes, activated between layers, the last one linear.

    Example:
        >>> StarFCN(6, (8, 1), n_domains=3)(torch.randn(2, 6), torch.tensor([0, 2])).shape
        torch.Size([2, 1])
    """

    def __init__(
        self, in_dim: int, sizes: Sequence[int], n_domains: int, activation: Activation = "relu", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if not sizes:
            raise ValueError("sizes must name at least one layer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        dims = [in_dim, *map(int, sizes)]
        self.layers = nn.ModuleList(StarLinear(a, b, n_domains) for a, b in zip(dims[:-1], dims[1:], strict=False))
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:
        """x: (B, in_dim), domain: (B,) -> (B, sizes[-1])."""
        for i, layer in enumerate(self.layers):
            x = layer(x, domain)  # (B, size_l)
            if i < len(self.layers) - 1:
                x = self.act(x)
                if self.dropout is not None:
                    x = self.dropout(x)
        return x


class PartitionedNorm(nn.Module):
    """Batch normalisation with shared γ, β times / plus per-domain γ_p, β_p and per-domain statistics.

    Args:
        dim: number of features normalised (the last axis of a (B, dim) input).
        n_domains: number of domains.
        momentum: weight of the current batch in the moving statistics (BatchNorm's 0.1).
        eps: added to the variance.

    Example:
        >>> pn = PartitionedNorm(4, n_domains=2)
        >>> pn(torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 1, 1])).shape
        torch.Size([6, 4])
    """

    def __init__(self, dim: int, n_domains: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if dim < 1 or n_domains < 1:
            raise ValueError(f"dim and n_domains must be >= 1, got {dim!r} and {n_domains!r}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
        self.n_domains, self.momentum, self.eps = n_domains, momentum, eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.domain_gamma = nn.Parameter(torch.ones(n_domains, dim))  # (N, dim) γ_p
        self.domain_beta = nn.Parameter(torch.zeros(n_domains, dim))  # (N, dim) β_p
        self.running_mean: Tensor
        self.running_var: Tensor
        self.register_buffer("running_mean", torch.zeros(n_domains, dim))  # (N, dim) μ_p
        self.register_buffer("running_var", torch.ones(n_domains, dim))  # (N, dim) σ²_p

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:
        """x: (B, dim), domain: (B,) -> (B, dim)."""
        if self.training:
            mean, var = self._batch_stats(x, domain)  # (N, dim) each, of this batch's rows per domain
        else:
            mean, var = self.running_mean, self.running_var
        z = (x - mean[domain]) * torch.rsqrt(var[domain] + self.eps)  # (B, dim)
        return z * (self.gamma * self.domain_gamma[domain]) + (self.beta + self.domain_beta[domain])

    def _batch_stats(self, x: Tensor, domain: Tensor) -> tuple[Tensor, Tensor]:
        N = self.n_domains
        count = torch.bincount(domain, minlength=N).to(x.dtype).unsqueeze(1)  # (N, 1)
        mean = x.new_zeros(N, x.shape[1]).index_add(0, domain, x) / count.clamp_min(1)  # (N, dim)
        sq = (x - mean[domain]).pow(2)  # (B, dim)
        var = x.new_zeros(N, x.shape[1]).index_add(0, domain, sq) / count.clamp_min(1)  # (N, dim) biased, as BN
        with torch.no_grad():  # moving statistics of the domains with >= 2 rows here (unbiased var, as BN)
            seen = count >= 2  # (N, 1)
            unbiased = var * count / (count - 1).clamp_min(1)
            m = self.momentum
            self.running_mean.copy_(torch.where(seen, (1 - m) * self.running_mean + m * mean, self.running_mean))
            self.running_var.copy_(torch.where(seen, (1 - m) * self.running_var + m * unbiased, self.running_var))
        return mean, var
