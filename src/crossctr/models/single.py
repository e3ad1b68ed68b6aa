"""One fully shared network (`name: single`): the base models of the paper's Table 1 and the DANN baseline.

Same embeddings (shared ⊕ domain-specific) and attention unit as CNAN-AT; only the NN
layers change (paper §3.1):
    deep       Deep-only, FCN 512 × 256                    logit = w·FCN(x_g) + b
    wide_deep  Wide & Deep (Cheng 2016)                    logit += Σ_j w_{f_j}   (first-order wide part)
    deepfm     DeepFM (Guo et al. 2017)                    logit += Σ_j w_{f_j} + FM(g)
    dcn        Deep & Cross (Wang et al. 2017), eq. 2      logit = w·(FCN(x_2) ⊕ x_2) + b
`domain_adversarial: true` adds a gradient-reversal domain classifier on the representation:
DANN (Ganin et al. 2016) with a Deep & Cross body, as the paper's baseline.
`name: tower` (its former name) is still read; "tower" now means only the per-domain towers of
Shared-Bottom, MMoE, PLE and M3oE.

Example:
    >>> import torch
    >>> from crossctr.data.batch import Batch
    >>> cfg = SingleNetworkConfig(network="deepfm", deep=(8,), attention_hidden=(4, 2), shared_dim=4)
    >>> m = SingleNetwork(cfg, [5, 7], 2)
    >>> m(Batch(torch.tensor([[3, 4]]), torch.tensor([1]), torch.tensor([1.0]))).logits.shape
    torch.Size([1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from pydantic import AliasChoices, Field, SerializationInfo, field_serializer
from torch import nn

from crossctr.data.batch import Batch
from crossctr.layers.fm import FactorizationMachine
from crossctr.layers.grl import grad_reverse
from crossctr.layers.wide import WideLinear
from crossctr.models.base import ModelOutput, accept_former_names, register
from crossctr.models.embedded import AttentiveConfig, attentive_network, input_embedding

__all__ = ["SingleNetworkConfig", "SingleNetwork"]


class SingleNetworkConfig(AttentiveConfig):
    name: Literal["single"] = "single"
    # The network above the embeddings: paper Table 1's variants. `nn` (its former name) is still
    # read; fingerprints and checkpoints keep that key (serialization alias), so runs made before
    # the rename stay valid.
    network: Literal["deep", "wide_deep", "deepfm", "dcn"] = Field(
        default="dcn", validation_alias=AliasChoices("network", "nn"), serialization_alias="nn"
    )
    domain_adversarial: bool = False  # True: DANN's gradient-reversal domain classifier

    @field_serializer("name")
    def _former_name(self, name: str, info: SerializationInfo) -> str:
        """The fingerprint form (by_alias) keeps the former name, so runs made before the rename stay valid."""
        return "tower" if info.by_alias else name


@register("single", SingleNetworkConfig, former_names=("tower",))
class SingleNetwork(nn.Module):
    def __init__(self, config: SingleNetworkConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        self.embedding = input_embedding(config, cardinalities, n_domains)
        self.network = attentive_network(
            config,
            len(cardinalities),
            self.embedding.out_dim,
            cross_layers=config.cross_layers if config.network == "dcn" else 0,
        )
        self.head = nn.Linear(self.network.out_dim, 1)
        self.wide = WideLinear(cardinalities) if config.network in ("wide_deep", "deepfm") else None
        self.fm = FactorizationMachine() if config.network == "deepfm" else None
        self.discriminator = nn.Linear(self.network.out_dim, n_domains) if config.domain_adversarial else None
        accept_former_names(self, {"tower": "network"})  # weights saved before the rename

    def forward(self, batch: Batch) -> ModelOutput:
        x, d = batch.features, batch.domain
        e = self.embedding(x, d)  # (B, F, K)
        o, a, g = self.network(e)  # (B, H), (B, F), (B, F, K)
        logits = self.head(o).squeeze(-1)  # (B,)
        if self.wide is not None:
            logits = logits + self.wide(x)
        if self.fm is not None:
            logits = logits + self.fm(g)
        aux = {}
        if self.discriminator is not None and self.training:
            aux["adv"] = F.cross_entropy(self.discriminator(grad_reverse(o, self.config.grl_scale)), d)
        extras = {} if a is None else {"attention_shared": a.detach()}
        return ModelOutput(logits, aux, extras)
