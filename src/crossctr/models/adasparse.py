"""AdaSparse: a DNN whose neurons each domain weighs, and prunes, through a domain-aware pruner.

Paper: X. Yang, X. Peng, P. Wei, S. Liu, L. Wang, B. Zheng, "AdaSparse: Learning Adaptively
Sparse Structures for Multi-Domain Click-Through Rate Prediction", CIKM 2022.

One fully connected network serves every domain; before each linear layer a pruner reads
the domain's embedding and the layer's input neurons and outputs one weighting factor per
neuron (layers.pruner, paper §3.2), zero below ε, so every domain runs its own sparse
sub-network of the shared weights:
    e      = e_c ⊕ e_d                              shared ⊕ domain-specific embeddings (as CNAN-AT)
    E      = e_1 ⊕ … ⊕ e_F,   z = emb(d)            the domain-aware embedding
    h_0    = z ⊕ π_0 ⊙ E,     π_0 = Pruner_0(z, E)  the agnostic embeddings are pruned
    h_l    = π_l ⊙ a_l,  a_l = Dropout(ReLU(BN(W_l h_{l-1} + b_l))),  π_l = Pruner_l(z, a_l)
    logit  = w · h_L + b
    π      = β σ(α v) · 𝟙[β σ(α v) ≥ ε],  v = W_π [z ⊕ h]          form "fusion" (default)
The forms (paper §3.2): "binarization" σ(α v), whose factors tend to {0, 1} as α grows;
"scaling" β σ(v); "fusion" both. α starts at `alpha` and grows by `alpha_step` every training
forward (kept as a buffer, so a resumed or reloaded model continues from where it was).
`input_pruning: field` weighs each field's embedding with one factor instead of each of its
K neurons: the neuron-level input pruner is a (K + F·K) × F·K map, on the zoo's 72-d
embeddings more work per row than the DNN it prunes; the field-level one is (K + F·K) × F.
The paper's flexible sparsity regulariser (a target sparsity ratio for the binarization form)
is not implemented; Scenario-Wise-Rec does not use it either.

Defaults are Scenario-Wise-Rec's (Li et al., KDD 2024 benchmark) MovieLens setting, where
AdaSparse is the best public model on one domain: hidden (32, 32) with BatchNorm and dropout
0.2, form "fusion", ε = 0.01, β = 2, α = 1 raised by 1e-4 per step. The embeddings are the
zoo's (`EmbeddedConfig`), so comparisons with the other models differ only in the network.
`attention_hidden` non-empty puts CNAN-AT's feature attention unit (paper eq. 1) on the
embeddings; AdaSparse has none. Each row's fraction of kept factors per pruner leaves in
`extras["kept"]`.

Example:
    >>> import torch
    >>> from crossctr.data.batch import Batch
    >>> m = AdaSparse(AdaSparseConfig(shared_dim=4, specific_dim=2, deep=(8,)), [5, 7], 3)
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
from crossctr.layers.pruner import DomainPruner, PrunerForm
from crossctr.models.base import ModelOutput, register
from crossctr.models.embedded import EmbeddedConfig, EmbeddedInput

__all__ = ["AdaSparseConfig", "AdaSparse"]


class AdaSparseConfig(EmbeddedConfig):
    name: Literal["adasparse"] = "adasparse"
    deep: tuple[int, ...] = (32, 32)  # Scenario-Wise-Rec's MovieLens DNN
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)  # Scenario-Wise-Rec's; the zoo's other models default to 0
    batch_norm: bool = True  # Linear → BatchNorm → ReLU → Dropout, as Scenario-Wise-Rec's DNN
    form: PrunerForm = "fusion"  # Scenario-Wise-Rec's choice; the paper also has "binarization" and "scaling"
    input_pruning: Literal["neuron", "field"] = "neuron"  # paper: neuron level, each embedding element
    beta: float = Field(default=2.0, gt=0)  # paper and Scenario-Wise-Rec: factors in (0, 2), 1 at v = 0
    epsilon: float = Field(default=1e-2, ge=0)  # Scenario-Wise-Rec: factors below 0.01 are zeroed
    alpha: float = Field(default=1.0, gt=0)  # Scenario-Wise-Rec: the annealing temperature starts at 1
    alpha_step: float = Field(default=1e-4, ge=0)  # Scenario-Wise-Rec: added every step (0 = fixed α)


@register("adasparse", AdaSparseConfig)
class AdaSparse(EmbeddedInput, nn.Module):
    def __init__(self, config: AdaSparseConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        F, K = len(cardinalities), self._build_input(config, cardinalities, n_domains)
        self.domain_embedding = nn.Embedding(n_domains, K)  # z, the domain-aware embedding the pruners read
        nn.init.normal_(self.domain_embedding.weight, 0.0, config.embedding_init_std)

        def pruner(in_dim: int, out_dim: int) -> DomainPruner:
            return DomainPruner(K, in_dim, out_dim, form=config.form, beta=config.beta, epsilon=config.epsilon)

        self.input_pruner = pruner(F * K, F * K if config.input_pruning == "neuron" else F)
        self.layers, self.pruners = nn.ModuleList(), nn.ModuleList()
        d = K + F * K
        for h in config.deep:  # a loop over layers: each is followed by its own pruner
            self.layers.append(MLP(d, (h,), dropout=config.dropout, batch_norm=config.batch_norm))
            self.pruners.append(pruner(h, h))
            d = h
        self.head = nn.Linear(d, 1)
        self.alpha: torch.Tensor
        self.register_buffer("alpha", torch.tensor(float(config.alpha)))  # α, annealed during training

    def forward(self, batch: Batch) -> ModelOutput:
        d = batch.domain
        e, extras = self._embed(batch)  # (B, F, K), attention-weighted when the model has the unit
        if self.training and self.config.alpha_step > 0:
            with torch.no_grad():
                self.alpha.add_(self.config.alpha_step)
        alpha = self.alpha.clone() if self.training else self.alpha  # a copy: backward keeps this step's α
        z = self.domain_embedding(d)  # (B, K)
        x = e.flatten(1)  # (B, F*K)
        pi = self.input_pruner(z, x, alpha)  # (B, F*K), or (B, F) one factor per field
        x = pi * x if self.config.input_pruning == "neuron" else (pi.unsqueeze(-1) * e).flatten(1)  # (B, F*K)
        h = torch.cat([z, x], dim=1)  # (B, K + F*K)
        kept = [(pi > 0).float().mean(1)]
        for layer, pruner in zip(self.layers, self.pruners, strict=False):
            a = layer(h)  # (B, H_l)
            p = pruner(z, a, alpha)  # (B, H_l)
            h = p * a  # (B, H_l)
            kept.append((p > 0).float().mean(1))
        logits = self.head(h).squeeze(-1)  # (B,)
        extras["kept"] = torch.stack(kept, 1).detach()  # (B, L + 1) fraction of factors ≥ ε per pruner
        return ModelOutput(logits, {}, extras)
