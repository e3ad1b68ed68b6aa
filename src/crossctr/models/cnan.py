"""CNAN-AT: Cross-domain Neural Attention Network with Adversarial Training (Qiu et al., paper §2).

For a row of domain d:
    e        = e_c ⊕ e_d                                  shared ⊕ domain-specific embeddings
    O^c      = Net_c(e)     (attention W^c, Deep & Cross) shared network, every row
    O^d      = Net_d(e)     (attention W^d, Deep & Cross) private network, rows of domain d only
    logit    = W_c^d O^c + W^d O^d + b^d                  per-domain head
Auxiliary losses (weighted by the trainer, see docs/design.md):
    adv      L_adv  = mean_i Σ_d p(d|O^c_i) log p(d|O^c_i)  (entropy form; the shared net minimises it)
    disc     CE of D on detached O^c (the discriminator's own step; `discriminator_step`)
    domain   Σ_d L_d, L_d = -mean_{i in d} log p(d|O^d_i)   (private features stay domain-telling)
Ablations: CNAN₁ = `specific_dim: 0`, CNAN₂ = `attention: false`.

Example:
    >>> import torch
    >>> from crossctr.data.batch import Batch
    >>> m = CNAN(CNANConfig(deep=(16, 8), attention_hidden=(8, 4), shared_dim=4, specific_dim=2), [5, 7], 3)
    >>> out = m(Batch(torch.tensor([[3, 4], [1, 2]]), torch.tensor([0, 2]), torch.tensor([1.0, 0.0])))
    >>> out.logits.shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from crossctr.data.batch import Batch, Shard
from crossctr.layers.fast import GroupFn, Linear, autocast_input, rows_by_group
from crossctr.layers.grl import grad_reverse
from crossctr.layers.heads import DomainHeads
from crossctr.layers.wasserstein import Critic, gradient_penalty
from crossctr.losses import DomainWeights
from crossctr.models.base import ModelOutput, register
from crossctr.models.embedded import AttentiveConfig, attentive_network, input_embedding

__all__ = ["CNANConfig", "CNANPlusConfig", "CNAN"]


class CNANConfig(AttentiveConfig):
    name: Literal["cnan"] = "cnan"
    # Normalisation after each linear map of every network's FCN; the paper names none. "layer"
    # is per row; "batch" takes statistics over the rows each network runs on.
    norm: Literal["none", "batch", "layer"] | None = None  # None: "none"
    # Depth of the private networks' FCN: the last k sizes of `deep` (so shared and private
    # features keep one size for the one discriminator and the heads); None: all of `deep`, as the paper.
    private_layers: int | None = Field(default=None, ge=1)
    # entropy: paper §2.3; grl: DANN-style reversal; wasserstein: the paper's introduction
    # (D_c, D_s, D_t with critics and gradient penalty); none: no adversarial term.
    adversarial: Literal["entropy", "grl", "wasserstein", "none"] = "entropy"
    # Train D in its own term on detached O^c (docs/design.md); False = the paper read literally.
    discriminator_step: bool = True
    domain_loss: bool = True  # the L_d terms on private features
    # Wasserstein form: the domain whose shared features the others are pulled towards
    # (the paper's source, the rich domain; domain.values order), the gradient-penalty weight
    # γ (WDGRL uses 10), and a cap on the private-vs-shared distances the model is rewarded for
    # keeping large, so "keep D_s, D_t large" cannot be won by blowing up the features' scale.
    wasserstein_source: int = 0
    gp_weight: float = 10.0
    wasserstein_margin: float = 1.0
    # Multi-task (the paper's future work): heads for the dataset's extra labels (schema
    # `tasks`) on the same shared and private features, each with its own per-domain weights.
    # None: click only.
    tasks: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _private_depth(self) -> CNANConfig:
        if self.private_layers is not None and self.private_layers > len(self.deep):
            raise ValueError(
                f"private_layers {self.private_layers} is more than "
                f"the {len(self.deep)} layers of deep {list(self.deep)}"
            )
        return self

    @property
    def private_deep(self) -> tuple[int, ...]:
        """FCN sizes of each private network."""
        return self.deep if self.private_layers is None else self.deep[-self.private_layers :]


class CNANPlusConfig(CNANConfig):
    """CNAN-AT+: crossctr's variant of the paper's model (the same `CNAN` class, other defaults).

    What differs from the paper's CNAN-AT, and why: LayerNorm after each linear map of the
    networks' FCNs (per row, so the private networks' row padding stays harmless; the paper's plain
    FCN overfits ML-1M after two or three epochs), and private networks one layer deep (a
    data-poor domain's own 512 × 256 network has far more weights than its rows can fit).
    Measured so far (docs/results/README.md, "Calibration"): it does not yet beat Shared-Bottom on
    ML-1M's small domains; its under-18 private network peaks epochs before the shared one.
    """

    name: Literal["cnan_plus"] = "cnan_plus"  # type: ignore[assignment]
    norm: Literal["none", "batch", "layer"] | None = "layer"
    private_layers: int | None = Field(default=1, ge=1)


@register("cnan", CNANConfig)
class CNAN(nn.Module):
    def __init__(self, config: CNANConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config, self.n_domains = config, n_domains
        self.embedding = input_embedding(config, cardinalities, n_domains)
        n_fields, K, norm = len(cardinalities), self.embedding.out_dim, config.norm or "none"
        self.shared = attentive_network(config, n_fields, K, norm=norm)
        self.private = nn.ModuleList(
            attentive_network(config, n_fields, K, deep=config.private_deep, norm=norm) for _ in range(n_domains)
        )
        rep_dim = self.shared.out_dim
        self.heads = DomainHeads(rep_dim, n_domains, n_inputs=2)
        self.task_heads = nn.ModuleList(DomainHeads(rep_dim, n_domains, n_inputs=2) for _ in range(config.tasks or 0))
        self.discriminator = Linear(rep_dim, n_domains)  # D(·) = softmax(W O + b), one for all spaces
        if config.adversarial == "wasserstein":
            if not 0 <= config.wasserstein_source < n_domains:
                raise ValueError(
                    f"wasserstein_source {config.wasserstein_source} is not a domain id in 0..{n_domains - 1}"
                )
            # One critic per distance: shared(source) vs shared(d) for each other d (D_c),
            # private(d) vs shared(d) for each d (D_s for the source, D_t for the targets).
            self.critic_shared = nn.ModuleList(Critic(rep_dim) for _ in range(n_domains))
            self.critic_private = nn.ModuleList(Critic(rep_dim) for _ in range(n_domains))

    def forward(self, batch: Batch) -> ModelOutput:
        x, d = batch.features, batch.domain
        e = self.embedding(x, d)  # (B, F, K)
        e = autocast_input(e)  # one cast for all N + 1 networks, not one per network
        o_c, a_c, _ = self.shared(e)  # (B, H), (B, F)
        o_p, a_p = rows_by_group(
            cast("Sequence[GroupFn]", self.private),  # cast: a ModuleList of modules of rows, no Sequence to mypy
            e,
            d,
            outputs=2,
        )  # (B, H), (B, F): each domain's network on its own rows only
        logits = self.heads(o_c, o_p, domain=d)  # (B,)
        task_logits = (
            torch.stack([h(o_c, o_p, domain=d) for h in self.task_heads], 1) if len(self.task_heads) else None
        )  # (B, T); a loop over tasks
        assert o_p is not None  # every private network returns its representation
        extras = (
            {} if a_c is None or a_p is None else {"attention_shared": a_c.detach(), "attention_private": a_p.detach()}
        )
        aux = self._aux_losses(o_c, o_p, d, batch.shard) if self.training else {}  # scoring needs no losses
        return ModelOutput(logits, aux, extras, task_logits)

    def _aux_losses(
        self, o_c: torch.Tensor, o_p: torch.Tensor, d: torch.Tensor, shard: Shard | None
    ) -> dict[str, torch.Tensor]:
        cfg, D, aux = self.config, self.discriminator, {}
        if cfg.adversarial == "entropy":
            if cfg.discriminator_step:
                # The shared net is pushed towards D's uncertainty; D itself is not (frozen weights).
                logp = F.log_softmax(D(o_c, frozen=True).float(), dim=-1)  # (B, N), fp32 under autocast
                aux["disc"] = F.cross_entropy(D(o_c.detach()), d)
            else:
                logp = F.log_softmax(D(o_c).float(), dim=-1)
            aux["adv"] = (logp.exp() * logp).sum(-1).mean()  # negative entropy
        elif cfg.adversarial == "grl":
            aux["adv"] = F.cross_entropy(D(grad_reverse(o_c, cfg.grl_scale)), d)
        elif cfg.adversarial == "wasserstein":
            aux["adv"], aux["critic"] = self._wasserstein(o_c, o_p, d)
        if cfg.domain_loss:
            nll = F.cross_entropy(D(o_p), d, reduction="none")  # (B,)
            aux["domain"] = DomainWeights(self.n_domains).mean(nll, d, shard)  # Σ_d L_d, weighed as the click loss
        return aux

    def _wasserstein(self, o_c: torch.Tensor, o_p: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature loss mean(D_c) − mean(min(D_s/t, margin)) and the critics' own loss −W + γ·GP."""
        cfg = self.config
        src = cfg.wasserstein_source
        rows = [(d == k).nonzero(as_tuple=True)[0] for k in range(self.n_domains)]  # N index tensors
        pairs: list[tuple[Critic, torch.Tensor, torch.Tensor, bool]] = []  # (critic, p, q, pull together?)
        for k, r in enumerate(rows):
            if len(r) < 2:
                continue
            if k != src and len(rows[src]) >= 2:
                # cast: both ModuleLists hold only the Critics __init__ built
                pairs.append((cast(Critic, self.critic_shared[k]), o_c[rows[src]], o_c[r], True))  # D_c
            pairs.append((cast(Critic, self.critic_private[k]), o_p[r], o_c[r], False))  # D_s / D_t
        zero = o_c.sum() * 0.0
        if not pairs:
            return zero, zero
        feat, critic = [], []
        for f, p, q, together in pairs:
            w = f.distance(p, q, frozen=True)
            feat.append(w if together else -w.clamp(max=cfg.wasserstein_margin))
            pd, qd = p.detach(), q.detach()
            critic.append(-f.distance(pd, qd) + cfg.gp_weight * gradient_penalty(f, pd, qd))
        return torch.stack(feat).mean(), torch.stack(critic).mean()


register("cnan_plus", CNANPlusConfig)(CNAN)  # CNAN-AT+: the same model under crossctr's defaults
