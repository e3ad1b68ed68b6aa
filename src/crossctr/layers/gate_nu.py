"""Gate Neural Unit of PEPNet (Chang et al., KDD 2023, eq. 1-2).

    x' = ReLU(W1 x + b1),   δ = γ · sigmoid(W2 x' + b2)   ∈ (0, γ)^out

With γ = 2 (the paper's choice) a neutral gate (W2 x' + b2 = 0) scales by exactly 1, and a
gate can amplify a signal as well as damp it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from crossctr.layers.fast import linear

__all__ = ["GateNU"]


class GateNU(nn.Module):
    """Two-layer gate that turns prior information into per-unit scales in (0, γ).

    Args:
        in_dim: size of the gate's input (the prior information).
        out_dim: number of scales, e.g. one per feature field.
        hidden: size of the ReLU layer.
        gamma: γ, the largest scale (paper: 2).

    Example:
        >>> gate = GateNU(6, out_dim=3, hidden=4)
        >>> s = gate(torch.randn(2, 6))
        >>> s.shape, bool(((s > 0) & (s < 2)).all())
        (torch.Size([2, 3]), True)
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, gamma: float = 2.0) -> None:
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        self.gamma = gamma
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_dim) -> δ (B, out_dim) in (0, γ)."""
        h = torch.relu(linear(x, self.fc1.weight, self.fc1.bias))  # (B, hidden)
        return self.gamma * torch.sigmoid(linear(h, self.fc2.weight, self.fc2.bias))  # (B, out_dim)
