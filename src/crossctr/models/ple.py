"""PLE: Progressive Layered Extraction, shared and per-domain experts over several levels.

Paper: H. Tang, J. Liu, M. Zhao, X. Gong, "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020.

The paper's tasks are the domains here. Each level (a Customized Gate Control unit) has
shared experts and experts of each domain; domain d's gate mixes the shared experts and
domain d's own, and on every level but the last a shared gate mixes all experts for the
next level's shared experts (paper eq. 1-6):
    e          = e_c ⊕ e_d                        shared ⊕ domain-specific embeddings (as CNAN-AT)
    x^{d,0}    = x^{s,0} = e_1 ⊕ … ⊕ e_F
    x^{·,j}    = CGC_j(x^{·,j-1})                  j = 1..levels
    logit      = Tower_d(x^{d,levels})
Experts, gates and towers are stacked parameters (layers.experts): no loop over them.
`attention_hidden` non-empty puts CNAN-AT's feature attention unit (paper eq. 1) on the
embeddings; PLE has none.

Example:
    >>> import torch
    >>> from crossctr.data.batch import Batch
    >>> m = PLE(PLEConfig(shared_dim=4, specific_dim=2, deep=(8,), tower=(4,)), [5, 7], 3)
    >>> m(Batch(torch.tensor([[3, 4], [1, 2]]), torch.tensor([0, 2]), torch.tensor([1.0, 0.0]))).logits.shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field
from torch import nn

from crossctr.data.batch import Batch
from crossctr.layers.experts import ExtractionLayer, logit_towers, take_domain
from crossctr.models.base import ModelOutput, register
from crossctr.models.embedded import EmbeddedConfig, EmbeddedInput

__all__ = ["PLEConfig", "PLE"]


class PLEConfig(EmbeddedConfig):
    name: Literal["ple"] = "ple"
    levels: int = Field(default=2, ge=1)  # the paper's best depth is 2 or 3 extraction levels
    shared_experts: int = Field(default=2, ge=0)  # per level; with 1 per domain, 5 experts for 3 domains
    specific_experts: int = Field(default=1, ge=0)  # per domain and level
    deep: tuple[int, ...] = (256, 128)  # each expert's hidden sizes, as MMoE's experts here
    tower: tuple[int, ...] = (128,)  # hidden sizes of each domain's tower, then a linear logit


@register("ple", PLEConfig)
class PLE(EmbeddedInput, nn.Module):
    def __init__(self, config: PLEConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        K = self._build_input(config, cardinalities, n_domains)
        self.levels = nn.ModuleList()
        d = len(cardinalities) * K
        for j in range(config.levels):
            level = ExtractionLayer(
                d,
                n_domains,
                config.shared_experts,
                config.specific_experts,
                config.deep,
                shared_gate=j < config.levels - 1,
                dropout=config.dropout,
                batch_norm=bool(config.batch_norm),
            )
            self.levels.append(level)
            d = level.out_dim
        self.towers = logit_towers(n_domains, d, config.tower, config.dropout, bool(config.batch_norm))

    def forward(self, batch: Batch) -> ModelOutput:
        d = batch.domain
        e, extras = self._embed(batch)  # (B, F, K), attention-weighted when the model has the unit
        h = e.flatten(1)  # (B, F*K)
        for level in self.levels:
            h = level(h)  # (B, N + 1, H), the last level (B, N, H)
        logits = take_domain(self.towers(h), d).squeeze(-1)  # (B, N, 1) -> (B,) tower d on domain d's output
        return ModelOutput(logits, {}, extras)
