"""STAR: Star Topology Adaptive Recommender, one network whose weights are shared ⊙ per-domain.

Paper: X.-R. Sheng, L. Zhao, G. Zhou, X. Ding, B. Dai, Q. Luo, S. Yang, J. Lv, C. Zhang,
H. Deng, X. Zhu, "One Model to Serve All: Star Topology Adaptive Recommender for
Multi-Domain CTR Prediction", CIKM 2021. (It is sometimes cited as KDD 2021; it appeared at CIKM.)

The paper's domains are the domains here. Three parts (paper §4):
    e      = e_c ⊕ e_d                                shared ⊕ domain-specific embeddings (as CNAN-AT)
    z      = PN_d(e_1 ⊕ … ⊕ e_F)                      Partitioned Normalization (eq. 2)
    main   = StarFCN_d(z)                              layer weights W ⊙ W_d, bias b + b_d (eq. 3)
    aux    = MLP([emb(d) ⊕ e_1 ⊕ … ⊕ e_F])             auxiliary network, 2 layers
    logit  = main + aux                                (eq. 4, before the sigmoid)
The paper trains on batches of one domain; ours mix domains, so PN normalises each row with
the batch statistics of its own domain's rows (the same when a batch holds one domain) and
keeps moving statistics per domain for eval. `norm: batch` replaces PN by BatchNorm (the
paper's BN-vs-PN comparison); `aux_hidden: 0` drops the auxiliary network.
`attention_hidden` non-empty puts CNAN-AT's feature attention unit (paper eq. 1) on the
embeddings; STAR has none.

Example:
    >>> import torch
    >>> from crossctr.data.batch import Batch
    >>> m = STAR(STARConfig(shared_dim=4, specific_dim=2, deep=(8,), aux_hidden=4), [5, 7], 3)
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
from crossctr.layers.mlp import MLP
from crossctr.layers.star import PartitionedNorm, StarFCN
from crossctr.models.base import ModelOutput, register
from crossctr.models.embedded import EmbeddedConfig, EmbeddedInput

__all__ = ["STARConfig", "STAR"]


class STARConfig(EmbeddedConfig):
    name: Literal["star"] = "star"
    # The library's FCN; with N per-domain copies STAR has about CNAN-AT's N + 1 networks' weights.
    deep: tuple[int, ...] = (512, 256)
    norm: Literal["partitioned", "batch"] = "partitioned"  # "batch": the paper's BatchNorm ablation
    aux_hidden: int = Field(default=64, ge=0)  # the auxiliary network's hidden layer; 0 = no auxiliary network


@register("star", STARConfig)
class STAR(EmbeddedInput, nn.Module):
    def __init__(self, config: STARConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        K = self._build_input(config, cardinalities, n_domains)
        in_dim = len(cardinalities) * K
        self.norm = PartitionedNorm(in_dim, n_domains) if config.norm == "partitioned" else nn.BatchNorm1d(in_dim)
        self.fcn = StarFCN(in_dim, (*config.deep, 1), n_domains, dropout=config.dropout)  # last layer: the logit
        self.aux: nn.Sequential | None = None
        if config.aux_hidden > 0:
            self.domain_embedding = nn.Embedding(n_domains, K)  # the domain indicator, one more field
            nn.init.normal_(self.domain_embedding.weight, 0.0, config.embedding_init_std)
            self.aux = nn.Sequential(
                MLP(in_dim + K, (config.aux_hidden,), batch_norm=bool(config.batch_norm)),
                nn.Linear(config.aux_hidden, 1),
            )

    def forward(self, batch: Batch) -> ModelOutput:
        d = batch.domain
        e, extras = self._embed(batch)  # (B, F, K), attention-weighted when the model has the unit
        x0 = e.flatten(1)  # (B, F*K)
        z = self.norm(x0, d) if isinstance(self.norm, PartitionedNorm) else self.norm(x0)  # (B, F*K)
        logits = self.fcn(z, d).squeeze(-1)  # (B,)
        if self.aux is not None:
            logits = logits + self.aux(torch.cat([self.domain_embedding(d), x0], dim=1)).squeeze(-1)  # (B,)
        return ModelOutput(logits, {}, extras)
