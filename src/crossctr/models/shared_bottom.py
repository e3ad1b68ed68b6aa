"""Shared-Bottom: hard parameter sharing with one tower per domain.

Paper: R. Caruana, "Multitask Learning", Machine Learning 28(1), 1997.

Multi-task learning with a shared hidden layer under task-specific outputs; here the tasks
are the domains: every row goes through the shared bottom, and a row of domain d is scored
by tower d only.
    e      = e_c ⊕ e_d                        shared ⊕ domain-specific embeddings (as CNAN-AT)
    h      = FCN(e_1 ⊕ … ⊕ e_F)               shared bottom, every row
    logit  = Tower_d(h)                       per-domain tower, ending in a linear logit
All towers run as one stacked MLP and each row keeps its own domain's logit.
`attention_hidden` non-empty puts CNAN-AT's feature attention unit (paper eq. 1) on the
embeddings, for comparisons that isolate the attention; Caruana's model has none.

Example:
    >>> import torch
    >>> from crossctr.data.batch import Batch
    >>> m = SharedBottom(SharedBottomConfig(shared_dim=4, specific_dim=2, deep=(8,), tower=(4,)), [5, 7], 3)
    >>> m(Batch(torch.tensor([[3, 4], [1, 2]]), torch.tensor([0, 2]), torch.tensor([1.0, 0.0]))).logits.shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from crossctr.data.batch import Batch
from crossctr.layers.experts import logit_towers, take_domain
from crossctr.layers.mlp import MLP
from crossctr.models.base import ModelOutput, register
from crossctr.models.embedded import EmbeddedConfig, EmbeddedInput

__all__ = ["SharedBottomConfig", "SharedBottom"]


class SharedBottomConfig(EmbeddedConfig):
    name: Literal["shared_bottom"] = "shared_bottom"
    deep: tuple[int, ...] = (512, 256)  # the library's FCN (paper §3): Deep-only plus per-domain towers
    tower: tuple[int, ...] = (128,)  # hidden sizes of each domain's tower, then a linear logit


@register("shared_bottom", SharedBottomConfig)
class SharedBottom(EmbeddedInput, nn.Module):
    def __init__(self, config: SharedBottomConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        K = self._build_input(config, cardinalities, n_domains)
        bn = bool(config.batch_norm)  # None: off
        self.bottom = MLP(len(cardinalities) * K, config.deep, dropout=config.dropout, batch_norm=bn)
        self.towers = logit_towers(n_domains, self.bottom.out_dim, config.tower, config.dropout, bn)

    def forward(self, batch: Batch) -> ModelOutput:
        d = batch.domain
        e, extras = self._embed(batch)  # (B, F, K), attention-weighted when the model has the unit
        h = self.bottom(e.flatten(1))  # (B, H)
        logits = take_domain(self.towers(h), d).squeeze(-1)  # (B, N, 1) -> (B,)
        return ModelOutput(logits, {}, extras)
