"""The input block every model shares with CNAN-AT, and CNAN-AT's network as one recipe.

Shared ⊕ domain-specific embeddings (paper section 2, FeatureEmbedding) and, optionally,
CNAN-AT's feature attention unit (paper eq. 1). Every model on this block sees the same
embeddings, so a comparison with CNAN-AT differs only in the network above them.
Configs: `InputConfig` (the block) <- `EmbeddedConfig` (the newer models, + batch_norm) and
`AttentiveConfig` (CNAN-AT and the paper's base models, + the network's settings);
`attentive_network` builds CNAN-AT's network (attention, cross layers, FCN) from either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from crossctr.data.batch import Batch
from crossctr.layers.attention import AttentionUnit
from crossctr.layers.attentive import AttentiveNetwork
from crossctr.layers.embedding import FeatureEmbedding
from crossctr.schema import StrictModel

__all__ = [
    "InputConfig",
    "EmbeddedConfig",
    "AttentiveConfig",
    "input_embedding",
    "attentive_network",
    "EmbeddedInput",
]


class InputConfig(StrictModel):
    """The input block's settings: every model on the shared ⊕ specific embeddings has them."""

    shared_dim: int = 64  # CNAN-AT's embeddings (paper §3), so comparisons differ only in the network
    specific_dim: int = 8  # paper §3: specific embedding 8; 0 = shared embeddings only (CNAN₁)
    attention_hidden: tuple[int, ...] = ()  # () = no attention unit, as the papers; (64, 32) = CNAN-AT's
    dropout: float = 0.0  # the papers name none
    sparse_embeddings: bool = False  # row-wise sparse gradients for the embedding tables
    # Paper gives no initialisation. Larger than the usual 1e-4..1e-2 because the attention
    # unit reads the embedding itself: near-zero embeddings give near-constant attention.
    embedding_init_std: float = 0.01


class EmbeddedConfig(InputConfig):
    """The newer multi-domain models: the input block, MLPs above it."""

    # BatchNorm after every hidden linear map of the network above the embeddings (as the
    # Scenario-Wise-Rec benchmark's MLPs); off by default: the models' own papers have none.
    batch_norm: bool | None = None  # None: off (left out of experiment fingerprints)


class AttentiveConfig(InputConfig):
    """CNAN-AT's network (attention unit, eq. 1; Deep & Cross, eq. 2): CNAN-AT and the paper's base models."""

    attention: bool = True  # False: no attention unit (CNAN₂)
    attention_hidden: tuple[int, ...] = (64, 32)  # paper: attention "64 × 32 × 1"
    attention_activation: Literal["relu", "sigmoid"] = "relu"  # paper uses ReLU for NN layers
    cross_layers: int = 2  # paper: two cross layers
    deep: tuple[int, ...] = (512, 256)  # paper: deep network 512 × 256
    stacking: Literal["stacked", "parallel"] = "stacked"  # eq. 2 stacks the FCN on the cross output
    grl_scale: float = 1.0  # gradient-reversal strength of a DANN-style domain classifier


def input_embedding(config: InputConfig, cardinalities: Sequence[int], n_domains: int) -> FeatureEmbedding:
    """The shared ⊕ domain-specific embeddings every model on the input block starts with."""
    return FeatureEmbedding(
        cardinalities,
        config.shared_dim,
        config.specific_dim,
        n_domains,
        sparse=config.sparse_embeddings,
        init_std=config.embedding_init_std,
    )


def attentive_network(
    config: InputConfig,
    n_fields: int,
    emb_dim: int,
    *,
    deep: Sequence[int] | None = None,
    cross_layers: int | None = None,
    norm: Literal["none", "batch", "layer"] = "none",
) -> AttentiveNetwork:
    """The one recipe for CNAN-AT's network from a model config; `deep`, `cross_layers` override the config's.

    A config without `attention` has the unit when `attention_hidden` is set; one without
    `attention_activation` or `stacking` takes ReLU and the stacked layout.
    """
    return AttentiveNetwork(
        n_fields,
        emb_dim,
        attention=getattr(config, "attention", bool(config.attention_hidden)),
        attention_hidden=config.attention_hidden,
        attention_activation=getattr(config, "attention_activation", "relu"),
        cross_layers=getattr(config, "cross_layers", 0) if cross_layers is None else cross_layers,
        deep=getattr(config, "deep", ()) if deep is None else deep,
        stacking=getattr(config, "stacking", "stacked"),
        dropout=config.dropout,
        norm=norm,
    )


class EmbeddedInput:
    """Mixin for an nn.Module model: `embedding` and `attention` attributes, built and applied once."""

    embedding: FeatureEmbedding
    attention: AttentionUnit | None

    def _build_input(
        self, config: InputConfig, cardinalities: Sequence[int], n_domains: int, *, attention: bool = True
    ) -> int:
        """Build the embedding (and the attention unit unless `attention=False`); returns K."""
        assert isinstance(self, nn.Module)
        self.embedding = input_embedding(config, cardinalities, n_domains)
        K = self.embedding.out_dim
        self.attention = AttentionUnit(K, config.attention_hidden) if attention and config.attention_hidden else None
        return K

    def _embed(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, F, K) embeddings, attention-weighted when the model has the unit, and the extras to report."""
        e = self.embedding(batch.features, batch.domain)  # (B, F, K)
        if self.attention is None:
            return e, {}
        g, a = self.attention(e)  # (B, F, K), (B, F)
        return g, {"attention_shared": a.detach()}
