"""MMoE: Multi-gate Mixture-of-Experts, one gate and one tower per domain.

Paper: J. Ma, Z. Zhao, X. Yi, J. Chen, L. Hong, E. H. Chi, "Modeling Task Relationships in
Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018.

The paper's tasks are the domains here: every domain has its own softmax gate over E shared
experts and its own tower; a row of domain d is scored by gate d and tower d (paper eq. 5-6):
    e       = e_c ⊕ e_d                               shared ⊕ domain-specific embeddings (as CNAN-AT)
    x       = e_1 ⊕ … ⊕ e_F
    f^d(x)  = Σ_i g^d(x)_i f_i(x),  g^d(x) = softmax(W_{g^d} x)
    logit   = Tower_d(f^d(x))
Experts, gates and towers are stacked parameters: one einsum per layer, no loop over them.
`attention_hidden` non-empty puts CNAN-AT's feature attention unit (paper eq. 1) on the
embeddings; MMoE has none. Each row's gate weights leave in `extras["gates"]`.

Example:
    >>> import torch
    >>> from crossctr.data.batch import Batch
    >>> m = MMoE(MMoEConfig(shared_dim=4, specific_dim=2, deep=(8,), tower=(4,)), [5, 7], 3)
    >>> m(Batch(torch.tensor([[3, 4], [1, 2]]), torch.tensor([0, 2]), torch.tensor([1.0, 0.0]))).logits.shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from crossctr.data.batch import Batch
from crossctr.layers.experts import SoftmaxGates, StackedMLP, logit_towers, take_domain
from crossctr.models.base import ModelOutput, register
from crossctr.models.embedded import EmbeddedConfig, EmbeddedInput

__all__ = ["MMoEConfig", "MMoE"]


class MMoEConfig(EmbeddedConfig):
    name: Literal["mmoe"] = "mmoe"
    n_experts: int = Field(default=4, ge=1)  # a few experts for a few domains; the paper varies 4-8
    deep: tuple[int, ...] = (256, 128)  # each expert's hidden sizes: half the library's FCN, times 4 experts
    tower: tuple[int, ...] = (128,)  # hidden sizes of each domain's tower, then a linear logit


@register("mmoe", MMoEConfig)
class MMoE(EmbeddedInput, nn.Module):
    def __init__(self, config: MMoEConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        K = self._build_input(config, cardinalities, n_domains)
        in_dim = len(cardinalities) * K
        bn = bool(config.batch_norm)  # None: off
        self.experts = StackedMLP(config.n_experts, in_dim, config.deep, dropout=config.dropout, batch_norm=bn)
        self.gates = SoftmaxGates(in_dim, n_domains, config.n_experts)
        self.towers = logit_towers(n_domains, self.experts.out_dim, config.tower, config.dropout, bn)

    def forward(self, batch: Batch) -> ModelOutput:
        d = batch.domain
        e, extras = self._embed(batch)  # (B, F, K), attention-weighted when the model has the unit
        x0 = e.flatten(1)  # (B, F*K)
        f = self.experts(x0)  # (B, E, H) every expert on every row
        g = self.gates(x0)  # (B, N, E) every domain's gate
        mix = torch.einsum("bne,beh->bnh", g, f)  # (B, N, H) f^d(x) for each domain d
        logits = take_domain(self.towers(mix), d).squeeze(-1)  # (B, N, 1) -> (B,) tower d on f^d
        extras["gates"] = take_domain(g, d).detach()  # (B, E) the row's own gate
        return ModelOutput(logits, {}, extras)
