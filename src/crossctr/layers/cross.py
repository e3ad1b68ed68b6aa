"""Cross network of DCN-v1 (Wang et al. 2017), paper eq. 2.

    x_{l+1} = x_0 (x_l^T w_l) + b_l + x_l

w_l is a vector, so each layer adds d parameters for an explicit degree-(l+2) feature cross;
the residual x_l keeps lower-degree terms.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CrossNetwork"]


class CrossNetwork(nn.Module):
    """n_layers DCN-v1 cross layers on a flat (B, D) input.

    Args:
        dim: D, the input size (output has the same size).
        n_layers: number of cross layers (paper: 2).

    Example:
        >>> CrossNetwork(5)(torch.randn(4, 5)).shape
        torch.Size([4, 5])
    """

    def __init__(self, dim: int, n_layers: int = 2) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim!r}")
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers!r}")
        self.dim = dim
        self.n_layers = n_layers
        # std 1/sqrt(D) keeps x_l · w_l of order |x_l|/sqrt(D) at init, not growing with D
        self.w = nn.Parameter(torch.randn(n_layers, dim) * dim**-0.5)  # (L, D)
        self.b = nn.Parameter(torch.zeros(n_layers, dim))  # (L, D)

    @property
    def out_dim(self) -> int:
        return self.dim

    def forward(self, x0: Tensor) -> Tensor:
        """x0: (B, D) -> x_L (B, D)."""
        x = x0
        # In the input's dtype: under bf16 autocast an fp32 bias would promote x_l to fp32 and the
        # next matmul would cast it back, a (B, D) copy each way per layer.
        w, b = self.w.to(x0.dtype), self.b.to(x0.dtype)
        for i in range(self.n_layers):
            xw = x @ w[i]  # (B,) scalar x_l^T w_l per row
            x = torch.addcmul(x + b[i], x0, xw.unsqueeze(-1))  # (B, D), one pass fewer than x0 * xw + b + x
        return x
