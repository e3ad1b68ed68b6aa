"""The input block the newer multi-domain models share with CNAN-AT.

Shared ⊕ domain-specific embeddings (paper section 2, FeatureEmbedding) and, optionally,
CNAN-AT's feature attention unit (paper eq. 1). Every model on this block sees the same
embeddings, so a comparison with CNAN-AT differs only in the network above them.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from crossctr.data.batch import Batch
from crossctr.layers.attention import AttentionUnit
from crossctr.layers.embedding import FeatureEmbedding
from crossctr.schema import StrictModel

__all__ = ["EmbeddedConfig", "EmbeddedInput"]


class EmbeddedConfig(StrictModel):
    shared_dim: int = 64  # CNAN-AT's embeddings (paper §3), so comparisons differ only in the network
    specific_dim: int = 8  # as CNAN-AT; 0 = shared embeddings only
    attention_hidden: tuple[int, ...] = ()  # () = no attention unit, as the papers; (64, 32) = CNAN-AT's
    dropout: float = 0.0
    # BatchNorm after every hidden linear map of the network above the embeddings (as the
    # Scenario-Wise-Rec benchmark's MLPs); off by default: the models' own papers have none.
    batch_norm: bool | None = None  # None: off (left out of experiment fingerprints)
    sparse_embeddings: bool = False  # row-wise sparse gradients for the embedding tables
    embedding_init_std: float = 0.01  # as CNAN-AT


class EmbeddedInput:
    """Mixin for an nn.Module model: `embedding` and `attention` attributes, built and applied once."""

    embedding: FeatureEmbedding
    attention: AttentionUnit | None

    def _build_input(self, config: EmbeddedConfig, cardinalities: Sequence[int], n_domains: int, *, attention: bool = True) -> int:
        """Build the embedding (and the attention unit unless `attention=False`); returns K."""
        assert isinstance(self, nn.Module)
        self.embedding = FeatureEmbedding(cardinalities, config.shared_dim, config.specific_dim, n_domains, sparse=config.sparse_embeddings, init_std=config.embedding_init_std)
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
