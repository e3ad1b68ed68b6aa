"""First-order linear part of Wide & Deep (Cheng et al. 2016) over categorical features.

    wide(x) = b + Σ_f w[offsets[f] + x_f]

One scalar weight per feature value, all features in one offset-indexed table (one gather).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["WideLinear"]


class WideLinear(nn.Module):
    """Logistic-regression term on one-hot features, returned as a logit part.

    Args:
        cardinalities: number of ids of each feature.
        sparse: make the table produce sparse gradients.

    Example:
        >>> WideLinear([3, 5])(torch.tensor([[0, 4], [2, 1]]))
        tensor([0., 0.], grad_fn=<AddBackward0>)
    """

    def __init__(self, cardinalities: Sequence[int], sparse: bool = False) -> None:
        super().__init__()
        cards = [int(c) for c in cardinalities]
        if not cards or any(c < 1 for c in cards):
            raise ValueError(
                f"cardinalities must be a non-empty sequence of ints >= 1, got {list(cardinalities)!r}"
            )
        self.cardinalities = tuple(cards)
        offsets = torch.tensor([0, *cards[:-1]], dtype=torch.int64).cumsum(0)
        self.register_buffer("offsets", offsets)  # (F,)
        self.weight = nn.Embedding(sum(cards), 1, sparse=sparse)
        nn.init.zeros_(self.weight.weight)  # start as the constant model b
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, F) local ids -> (B,)."""
        w = self.weight(x + self.offsets).squeeze(-1)  # (B, F)
        return w.sum(dim=-1) + self.bias  # (B,)
