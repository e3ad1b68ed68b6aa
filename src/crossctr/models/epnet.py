"""EPNet: PEPNet's Embedding Personalized Network, domain-gated feature embeddings.

Paper: J. Chang, C. Zhang, Y. Hui, D. Leng, Y. Niu, Y. Song, K. Gai, "PEPNet: Parameter and
Embedding Personalized Network for Infusing with Personalized Prior Information", KDD 2023.

Only EPNet (paper §3.3); PPNet, the per-task parameter personalisation, is left out. The
domain is the paper's domain-side prior: a Gate NU reads the domain's embedding and the
stop-gradient of the general embeddings and scales each field's embedding, then one shared
network scores every row (paper eq. 1-4):
    E      = e_1 ⊕ … ⊕ e_F,  e = e_c ⊕ e_d           shared ⊕ domain-specific embeddings (as CNAN-AT)
    δ      = U_ep(emb(d) ⊕ ⊘(E)) ∈ (0, γ)^F           Gate NU: ReLU layer, then γ·sigmoid, γ = 2
    O_ep   = δ ⊗ E                                    one scale per field
    logit  = w·Net(O_ep) + b                          Deep & Cross (`body: dcn`) or Deep-only
The network is CNAN-AT's (layers.attentive), so `body: dcn` at defaults is the `single` model's
DCN behind an EPNet gate. `attention_hidden` non-empty adds CNAN-AT's attention unit inside
the network; PEPNet has none. The gate's scales leave in `extras["field_scale"]`.

Example:
    >>> import torch
    >>> from crossctr.data.batch import Batch
    >>> m = EPNet(EPNetConfig(shared_dim=4, specific_dim=2, deep=(8,), gate_hidden=4), [5, 7], 3)
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
from crossctr.layers.gate_nu import GateNU
from crossctr.models.base import ModelOutput, accept_former_names, register
from crossctr.models.embedded import EmbeddedConfig, EmbeddedInput, attentive_network

__all__ = ["EPNetConfig", "EPNet"]


class EPNetConfig(EmbeddedConfig):
    name: Literal["epnet"] = "epnet"
    gate_hidden: int = Field(default=64, ge=1)  # Gate NU's ReLU layer; the paper gives no size
    gamma: float = Field(default=2.0, gt=0)  # paper: γ = 2, so a neutral gate scales by 1
    body: Literal["dcn", "deep"] = "dcn"  # the network after the gate: Deep & Cross or Deep-only
    cross_layers: int = Field(default=2, ge=1)  # as CNAN-AT (paper: two cross layers), for body: dcn
    deep: tuple[int, ...] = (512, 256)  # the library's FCN (CNAN-AT paper §3)


@register("epnet", EPNetConfig)
class EPNet(EmbeddedInput, nn.Module):
    def __init__(self, config: EPNetConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        F, K = (
            len(cardinalities),
            self._build_input(config, cardinalities, n_domains, attention=False),
        )  # attention sits in the network
        self.domain_embedding = nn.Embedding(n_domains, K)  # the domain-side prior E(F_d)
        nn.init.normal_(self.domain_embedding.weight, 0.0, config.embedding_init_std)
        self.gate = GateNU(K + F * K, F, config.gate_hidden, config.gamma)
        self.network = attentive_network(
            config, F, K, cross_layers=config.cross_layers if config.body == "dcn" else 0
        )  # stacked, as eq. 2
        self.head = nn.Linear(self.network.out_dim, 1)
        accept_former_names(self, {"tower": "network"})  # weights saved before the rename

    def forward(self, batch: Batch) -> ModelOutput:
        x, d = batch.features, batch.domain
        e = self.embedding(x, d)  # (B, F, K)
        prior = torch.cat([self.domain_embedding(d), e.detach().flatten(1)], dim=1)  # (B, K + F*K), ⊘(E): no gradient
        delta = self.gate(prior)  # (B, F) one scale per field
        o, a, _ = self.network(delta.unsqueeze(-1) * e)  # (B, H), (B, F) or None
        logits = self.head(o).squeeze(-1)  # (B,)
        extras = {"field_scale": delta.detach()}
        if a is not None:
            extras["attention_shared"] = a.detach()
        return ModelOutput(logits, {}, extras)
