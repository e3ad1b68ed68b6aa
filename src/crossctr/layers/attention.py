"""Feature-level attention unit, paper eq. 1.

    h0 = act(W0 e + b0),  h1 = act(W1 h0 + b1),  a = sigmoid(W2 h1 + b2),  g = a · e

One unit per network, shared by every feature (W has no feature index in eq. 1), so it is
applied to the whole (B, F, K) tensor at once: nn.Linear acts on the last dim, one batched
matmul per layer. The weights a (B, F) leave with g so models can report what each domain
attends to (paper Figure 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossctr.layers.fast import Linear
from crossctr.layers.mlp import Activation, make_activation

__all__ = ["AttentionUnit"]


class AttentionUnit(nn.Module):
    """Scores each feature embedding with a small MLP and rescales it by the score.

    Args:
        dim: K, size of one feature's embedding.
        hidden: hidden sizes of the scoring MLP (paper: 64 × 32, then 1).
        activation: act in eq. 1; "relu" (default) or "sigmoid".

    Example:
        >>> g, a = AttentionUnit(6)(torch.randn(2, 3, 6))
        >>> g.shape, a.shape
        (torch.Size([2, 3, 6]), torch.Size([2, 3]))
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 32), activation: Activation = "relu") -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim!r}")
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden sizes must all be >= 1, got {list(hidden)!r}")
        if activation not in ("relu", "sigmoid"):
            raise ValueError(f"activation must be 'relu' or 'sigmoid', got {activation!r}")
        layers: list[nn.Module] = []
        d = dim
        for h in hidden:
            layers += [Linear(d, int(h)), make_activation(activation)]
            d = int(h)
        layers.append(Linear(d, 1))  # W2, b2: one score per feature
        self.score = nn.Sequential(*layers)

    def forward(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """e: (B, F, K) -> g = a · e (B, F, K), a (B, F)."""
        a = torch.sigmoid(self.score(e)).squeeze(-1)  # (B, F)
        g = a.unsqueeze(-1) * e  # (B, F, K)
        return g, a
