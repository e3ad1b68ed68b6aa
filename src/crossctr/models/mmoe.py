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
    >>> from crossctr.data.dataset import Batch
    >>> m = MMoE(MMoEConfig(shared_dim=4, specific_dim=2, deep=(8,), tower=(4,)), [5, 7], 3)
    >>> m(Batch(torch.tensor([[3, 4], [1, 2]]), torch.tensor([0, 2]), torch.tensor([1.0, 0.0]))).logits.shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import Field
from torch import nn

from crossctr.data.dataset import Batch
from crossctr.layers.attention import AttentionUnit
from crossctr.layers.embedding import FeatureEmbedding
from crossctr.layers.experts import SoftmaxGates, StackedMLP, take_domain
from crossctr.models.base import ModelOutput, register
from crossctr.schema import StrictModel

__all__ = ["MMoEConfig", "MMoE"]


class MMoEConfig(StrictModel):
    name: Literal["mmoe"] = "mmoe"
    shared_dim: int = 64  # CNAN-AT's embeddings (paper §3), so comparisons differ only in the network
    specific_dim: int = 8  # as CNAN-AT; 0 = shared embeddings only
    attention_hidden: tuple[int, ...] = ()  # () = no attention unit, as the paper; (64, 32) = CNAN-AT's
    n_experts: int = Field(default=4, ge=1)  # a few experts for a few domains; the paper varies 4-8
    deep: tuple[int, ...] = (256, 128)  # each expert's hidden sizes: half the library's FCN, times 4 experts
    tower: tuple[int, ...] = (128,)  # hidden sizes of each domain's tower, then a linear logit
    dropout: float = 0.0
    sparse_embeddings: bool = False  # row-wise sparse gradients for the embedding tables
    embedding_init_std: float = 0.01  # as CNAN-AT


@register("mmoe", MMoEConfig)
class MMoE(nn.Module):
    def __init__(self, config: MMoEConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(cardinalities, config.shared_dim, config.specific_dim, n_domains, sparse=config.sparse_embeddings, init_std=config.embedding_init_std)
        K = self.embedding.out_dim
        in_dim = len(cardinalities) * K
        self.attention = AttentionUnit(K, config.attention_hidden) if config.attention_hidden else None
        self.experts = StackedMLP(config.n_experts, in_dim, config.deep, dropout=config.dropout)
        self.gates = SoftmaxGates(in_dim, n_domains, config.n_experts)
        self.towers = StackedMLP(n_domains, self.experts.out_dim, (*config.tower, 1), dropout=config.dropout, activate_last=False)

    def forward(self, batch: Batch) -> ModelOutput:
        x, d = batch.features, batch.domain
        e = self.embedding(x, d)  # (B, F, K)
        extras = {}
        if self.attention is not None:
            e, a = self.attention(e)  # (B, F, K), (B, F)
            extras["attention_shared"] = a.detach()
        x0 = e.flatten(1)  # (B, F*K)
        f = self.experts(x0)  # (B, E, H) every expert on every row
        g = self.gates(x0)  # (B, N, E) every domain's gate
        mix = torch.einsum("bne,beh->bnh", g, f)  # (B, N, H) f^d(x) for each domain d
        logits = take_domain(self.towers(mix), d).squeeze(-1)  # (B, N, 1) -> (B,) tower d on f^d
        extras["gates"] = take_domain(g, d).detach()  # (B, E) the row's own gate
        return ModelOutput(logits, {}, extras)
