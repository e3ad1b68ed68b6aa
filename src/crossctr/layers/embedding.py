"""Shared and domain-specific embeddings for all categorical features, one table per scope.

Each feature value v of feature f has a shared embedding e_c (seen by every domain) and, per
domain d, a specific embedding e_d; a row of domain d uses e = e_c ⊕ e_d (paper section 2).
All features live in one table: feature f's local id x is shifted by offsets[f] =
sum(cardinalities[:f]), so a batch is one gather, with no per-field module or loop. The
per-domain tables are stacked in one table too, indexed by d * total + (x + offsets[f]).

A multi-valued feature (genres "Action|Comedy") takes several columns ("slots") of the input,
padded with id 0; its embedding is the mean over its non-padding slots:
    e_f = Σ_{s in f, x_s != PAD} e(x_s) / max(1, #{s in f : x_s != PAD})
computed for all features at once with one gather and one index_add over the slot axis. The
slot layout is a buffer saved with the weights, so a model rebuilt from the plain
cardinalities list restores it when its state dict is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FeatureEmbedding", "PAD_ID", "SlotLayoutModule", "mean_over_slots", "check_table_args"]

PAD_ID = 0  # the padding id of multi-valued slots (crossctr.data.encoders.PAD_ID)


def mean_over_slots(values: Tensor, x: Tensor, slot_field: Tensor, slot_pooled: Tensor, n_fields: int) -> Tensor:
    """(B, S, K) per-slot values -> (B, F, K): each feature's mean over its non-padding slots.

    `slot_field` (S,) names each input column's feature, `slot_pooled` (S,) marks the slots of
    multi-valued features (a scalar slot always counts, whatever its id); one index_add per sum.
    """
    B = x.shape[0]
    keep = ((x != PAD_ID) | ~slot_pooled).to(values.dtype)  # (B, S)
    total = values.new_zeros(B, n_fields, values.shape[-1]).index_add_(
        1, slot_field, values * keep.unsqueeze(-1)
    )  # (B, F, K)
    count = keep.new_zeros(B, n_fields).index_add_(1, slot_field, keep).clamp_(min=1.0)  # (B, F)
    return total / count.unsqueeze(-1)


def check_table_args(
    cardinalities: Sequence[int], shared_dim: int, specific_dim: int, n_domains: int, init_std: float
) -> list[int]:
    """Validate the arguments every embedding-table implementation takes; returns the cardinalities as ints."""
    cards = [int(c) for c in cardinalities]
    if not cards or any(c < 1 for c in cards):
        raise ValueError(f"cardinalities must be a non-empty sequence of ints >= 1, got {list(cardinalities)!r}")
    if shared_dim < 1:
        raise ValueError(f"shared_dim must be >= 1, got {shared_dim!r}")
    if specific_dim < 0:
        raise ValueError(f"specific_dim must be >= 0 (0 disables it), got {specific_dim!r}")
    if n_domains < 1:
        raise ValueError(f"n_domains must be >= 1, got {n_domains!r}")
    if not init_std > 0:
        raise ValueError(f"init_std must be > 0, got {init_std!r}")
    return cards


class SlotLayoutModule(nn.Module):
    """A module over slots (input columns, several per multi-valued feature) whose layout is its
    persistent `slot_field` buffer: one built from plain cardinalities (e.g. read back from a run
    folder's JSON) adopts the slot layout its weights were trained with when they are loaded."""

    offsets: Tensor  # (F,) buffer: the first global id of each feature
    slot_field: Tensor | None  # (S,) buffer: feature of each slot; None: one slot per feature
    # Each subclass defines `_set_slots(slot_field)`: set the slot layout and the buffers derived from it.
    _set_slots: Callable[[Tensor], None]

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        layout = state_dict.get(prefix + "slot_field")
        if layout is not None and (
            self.slot_field is None
            or self.slot_field.shape != layout.shape
            or not torch.equal(self.slot_field.cpu(), layout.cpu())
        ):
            self._set_slots(layout.clone().to(self.offsets.device))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class FeatureEmbedding(SlotLayoutModule):
    """Embeds (B, F) local feature ids of rows from any domain into (B, F, K_c + K_s).

    Args:
        cardinalities: number of ids of each feature (vocabulary incl. reserved ids).
        shared_dim: K_c, size of the shared embedding (paper: 64).
        specific_dim: K_s, size of the domain-specific embedding (paper: 8); 0 disables it
            (the CNAN₁ ablation), then the output is e_c alone.
        n_domains: number of domains, i.e. of specific tables.
        init_std: standard deviation of the normal initialisation.
        sparse: make the tables produce sparse gradients (for sparse/lazy optimisers).
        slots: input columns of each feature (1 = scalar, L = multi-valued with L slots);
            by default `cardinalities.slots` when it has one (FieldCardinalities), else all 1.

    Example:
        >>> emb = FeatureEmbedding([3, 5], shared_dim=4, specific_dim=2, n_domains=2)
        >>> x = torch.tensor([[0, 4], [2, 1]])
        >>> emb(x, torch.tensor([0, 1])).shape
        torch.Size([2, 2, 6])
        >>> multi = FeatureEmbedding([3, 5], shared_dim=4, specific_dim=2, n_domains=2, slots=[1, 3])
        >>> multi(torch.tensor([[2, 3, 4, 0]]), torch.tensor([1])).shape  # feature 2: mean of ids 3, 4
        torch.Size([1, 2, 6])
    """

    offsets: Tensor  # (F,) buffer: the first global id of each feature
    # The slot layout's buffers, all three set by _set_slots, all three None without multi-valued features
    slot_field: Tensor | None
    slot_offsets: Tensor | None
    slot_pooled: Tensor | None

    def __init__(
        self,
        cardinalities: Sequence[int],
        shared_dim: int,
        specific_dim: int,
        n_domains: int,
        init_std: float = 0.01,
        sparse: bool = False,
        slots: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        cards = check_table_args(cardinalities, shared_dim, specific_dim, n_domains, init_std)
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
        if slots is None:
            slots = getattr(cardinalities, "slots", None)
        # (S,) feature of each input column; None: one column per feature (the default, fast path)
        self.register_buffer("slot_field", None)
        self.register_buffer("slot_offsets", None, persistent=False)
        self.register_buffer("slot_pooled", None, persistent=False)
        if slots is not None:
            widths = [int(w) for w in slots]
            if len(widths) != len(cards) or any(w < 1 for w in widths):
                raise ValueError(f"slots must give one width >= 1 per feature ({len(cards)}), got {list(slots)!r}")
            if any(w > 1 for w in widths):
                self._set_slots(torch.repeat_interleave(torch.arange(len(cards)), torch.tensor(widths)))

    def _set_slots(self, slot_field: Tensor) -> None:
        """Register the slot layout (saved with the weights) and what forward derives from it."""
        slot_field = slot_field.to(torch.int64)
        if slot_field.ndim != 1 or len(slot_field) == 0 or int(slot_field.max()) >= len(self.cardinalities):
            raise ValueError(f"slot layout {slot_field.tolist()} does not fit {len(self.cardinalities)} features")
        width = torch.bincount(slot_field, minlength=len(self.cardinalities))  # (F,)
        self.register_buffer("slot_field", slot_field)  # (S,)
        self.register_buffer("slot_offsets", self.offsets[slot_field], persistent=False)  # (S,)
        self.register_buffer("slot_pooled", width[slot_field] > 1, persistent=False)  # (S,) slot of a multi feature

    @property
    def out_dim(self) -> int:
        """K = K_c + K_s, the size of one feature's embedding."""
        return self.shared_dim + self.specific_dim

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:
        """x: (B, S) local ids per slot (S = F without multi-valued features); domain: (B,) -> (B, F, K)."""
        if self.slot_field is not None:
            return self._pooled(x, domain)
        idx = x + self.offsets  # (B, F) global ids in the shared table
        e_c = self.shared(idx)  # (B, F, K_c)
        if self.specific is None:
            return e_c
        e_d = self.specific(domain.unsqueeze(1) * self.total + idx)  # (B, F, K_s)
        return torch.cat([e_c, e_d], dim=-1)  # (B, F, K_c + K_s)

    def _pooled(self, x: Tensor, domain: Tensor) -> Tensor:
        slot_field, slot_offsets, slot_pooled = self.slot_field, self.slot_offsets, self.slot_pooled
        # forward calls this only with a slot layout, and _set_slots sets its three buffers together
        assert slot_field is not None and slot_offsets is not None and slot_pooled is not None
        S = x.shape[1]
        if S != len(slot_field):
            raise ValueError(f"input has {S} columns but the slot layout has {len(slot_field)}")
        idx = x + slot_offsets  # (B, S) global ids
        e = self.shared(idx)  # (B, S, K_c)
        if self.specific is not None:
            e = torch.cat([e, self.specific(domain.unsqueeze(1) * self.total + idx)], dim=-1)  # (B, S, K)
        return mean_over_slots(e, x, slot_field, slot_pooled, len(self.cardinalities))  # (B, F, K)
