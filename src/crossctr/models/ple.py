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
    >>> from crossctr.data.dataset import Batch
    >>> m = PLE(PLEConfig(shared_dim=4, specific_dim=2, deep=(8,), tower=(4,)), [5, 7], 3)
    >>> m(Batch(torch.tensor([[3, 4], [1, 2]]), torch.tensor([0, 2]), torch.tensor([1.0, 0.0]))).logits.shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Literal, Sequence

from pydantic import Field
from torch import nn

from crossctr.data.dataset import Batch
from crossctr.layers.attention import AttentionUnit
from crossctr.layers.embedding import FeatureEmbedding
from crossctr.layers.experts import ExtractionLayer, StackedMLP, take_domain
from crossctr.models.base import ModelOutput, register
from crossctr.schema import StrictModel

__all__ = ["PLEConfig", "PLE"]


class PLEConfig(StrictModel):
    name: Literal["ple"] = "ple"
    shared_dim: int = 64  # CNAN-AT's embeddings (paper §3), so comparisons differ only in the network
    specific_dim: int = 8  # as CNAN-AT; 0 = shared embeddings only
    attention_hidden: tuple[int, ...] = ()  # () = no attention unit, as the paper; (64, 32) = CNAN-AT's
    levels: int = Field(default=2, ge=1)  # the paper's best depth is 2 or 3 extraction levels
    shared_experts: int = Field(default=2, ge=0)  # per level; with 1 per domain, 5 experts for 3 domains
    specific_experts: int = Field(default=1, ge=0)  # per domain and level
    deep: tuple[int, ...] = (256, 128)  # each expert's hidden sizes, as MMoE's experts here
    tower: tuple[int, ...] = (128,)  # hidden sizes of each domain's tower, then a linear logit
    dropout: float = 0.0
    sparse_embeddings: bool = False  # row-wise sparse gradients for the embedding tables
    embedding_init_std: float = 0.01  # as CNAN-AT


@register("ple", PLEConfig)
class PLE(nn.Module):
    def __init__(self, config: PLEConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(cardinalities, config.shared_dim, config.specific_dim, n_domains, sparse=config.sparse_embeddings, init_std=config.embedding_init_std)
        K = self.embedding.out_dim
        self.attention = AttentionUnit(K, config.attention_hidden) if config.attention_hidden else None
        self.levels = nn.ModuleList()
        d = len(cardinalities) * K
        for j in range(config.levels):
            level = ExtractionLayer(d, n_domains, config.shared_experts, config.specific_experts, config.deep, shared_gate=j < config.levels - 1, dropout=config.dropout)
            self.levels.append(level)
            d = level.out_dim
        self.towers = StackedMLP(n_domains, d, (*config.tower, 1), dropout=config.dropout, activate_last=False)

    def forward(self, batch: Batch) -> ModelOutput:
        x, d = batch.features, batch.domain
        e = self.embedding(x, d)  # (B, F, K)
        extras = {}
        if self.attention is not None:
            e, a = self.attention(e)  # (B, F, K), (B, F)
            extras["attention_shared"] = a.detach()
        h = e.flatten(1)  # (B, F*K)
        for level in self.levels:
            h = level(h)  # (B, N + 1, H), the last level (B, N, H)
        logits = take_domain(self.towers(h), d).squeeze(-1)  # (B, N, 1) -> (B,) tower d on domain d's output
        return ModelOutput(logits, {}, extras)
