"""First-order linear part of Wide & Deep (Cheng et al. 2016) over categorical features.

    wide(x) = b + Σ_f w[offsets[f] + x_f]

One scalar weight per feature value, all features in one offset-indexed table (one gather).
A multi-valued feature contributes the mean weight of its non-padding slots, as its
embedding is the mean of theirs (layers.embedding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossctr.layers.embedding import SlotLayoutModule, mean_over_slots

__all__ = ["WideLinear"]


class WideLinear(SlotLayoutModule):
    """Logistic-regression term on one-hot features, returned as a logit part.

    Args:
        cardinalities: number of ids of each feature.
        sparse: make the table produce sparse gradients.
        slots: input columns of each feature (see FeatureEmbedding); by default
            `cardinalities.slots` when it has one, else one per feature.

    Example:
        >>> WideLinear([3, 5])(torch.tensor([[0, 4], [2, 1]]))
        tensor([0., 0.], grad_fn=<AddBackward0>)
    """

    offsets: Tensor  # (F,) buffer: the first global id of each feature
    # The slot layout's buffers, both set by _set_slots, both None without multi-valued features
    slot_field: Tensor | None
    slot_pooled: Tensor | None

    def __init__(self, cardinalities: Sequence[int], sparse: bool = False, slots: Sequence[int] | None = None) -> None:
        super().__init__()
        cards = [int(c) for c in cardinalities]
        if not cards or any(c < 1 for c in cards):
            raise ValueError(f"cardinalities must be a non-empty sequence of ints >= 1, got {list(cardinalities)!r}")
        self.cardinalities = tuple(cards)
        offsets = torch.tensor([0, *cards[:-1]], dtype=torch.int64).cumsum(0)
        self.register_buffer("offsets", offsets)  # (F,)
        self.weight = nn.Embedding(sum(cards), 1, sparse=sparse)
        nn.init.zeros_(self.weight.weight)  # start as the constant model b
        self.bias = nn.Parameter(torch.zeros(()))
        if slots is None:
            slots = getattr(cardinalities, "slots", None)
        self.register_buffer("slot_field", None)  # (S,) feature of each input column; None: one each
        self.register_buffer("slot_pooled", None, persistent=False)  # (S,) slot of a multi-valued feature
        if slots is not None and any(int(w) > 1 for w in slots):
            self._set_slots(torch.repeat_interleave(torch.arange(len(cards)), torch.tensor([int(w) for w in slots])))

    def _set_slots(self, slot_field: Tensor) -> None:
        width = torch.bincount(slot_field, minlength=len(self.cardinalities))  # (F,)
        self.slot_field = slot_field
        self.slot_pooled = (width > 1)[slot_field]

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, S) local ids per input column (S = F without multi-valued features) -> (B,)."""
        slot_field, slot_pooled = self.slot_field, self.slot_pooled
        if slot_field is None:
            w = self.weight(x + self.offsets).squeeze(-1)  # (B, F)
            return w.sum(dim=-1) + self.bias  # (B,)
        assert slot_pooled is not None  # _set_slots sets both buffers together
        w = self.weight(x + self.offsets[slot_field])  # (B, S, 1)
        pooled = mean_over_slots(
            w, x, slot_field, slot_pooled, len(self.cardinalities)
        )  # (B, F, 1), as the embeddings pool
        return pooled.squeeze(-1).sum(dim=-1) + self.bias  # (B,)
