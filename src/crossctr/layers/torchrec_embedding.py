"""`FeatureEmbedding`'s lookup through TorchRec, so the tables can be sharded over devices.

TorchRec (optional, not a dependency: docs/scaling.md gives the versions and install lines
that match a torch build) holds the shared table (Σ cardinalities × K_c) and the stacked
domain-specific table (N · Σ cardinalities × K_s) in one `EmbeddingBagCollection`, indexed
exactly as `FeatureEmbedding` indexes its own tables, so weights move between the two
unchanged. Each (row, feature) pair is one bag of the batch: a scalar feature is a bag of one
id, a multi-valued feature a bag of its non-padding slots, and MEAN pooling gives the same
mean `FeatureEmbedding` computes. Under `DistributedModelParallel` the collection is sharded
by TorchRec's planner (table-wise on CPU; row- and column-wise need its CUDA kernels) and the
rest of the model is data-parallel.

Example:
    >>> emb = TorchRecEmbedding([3, 5], shared_dim=4, specific_dim=2, n_domains=2)  # doctest: +SKIP
    >>> emb(torch.tensor([[0, 4], [2, 1]]), torch.tensor([0, 1])).shape  # doctest: +SKIP
    torch.Size([2, 2, 6])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossctr.layers.embedding import PAD_ID, FeatureEmbedding, check_table_args
from crossctr.schema import ConfigError

__all__ = ["TorchRecEmbedding", "torchrec_available"]


def torchrec_available() -> bool:
    try:
        import torchrec  # noqa: F401 - imported only to learn whether it loads
    except Exception:  # ImportError, or fbgemm operators that do not load against this torch
        return False
    return True


class TorchRecEmbedding(nn.Module):
    """Same inputs, outputs and table layout as `FeatureEmbedding`, looked up by TorchRec.

    Args: as `FeatureEmbedding` (cardinalities, shared_dim, specific_dim, n_domains,
    init_std, slots); `device`: where the tables are built ("meta" before sharding).
    """

    # Buffers of the slot layout, as FeatureEmbedding's (here always set: one slot per feature by default)
    slot_field: Tensor  # (S,) feature of each input column
    slot_offsets: Tensor  # (S,) first global id of each column's feature
    slot_pooled: Tensor  # (S,) slot of a multi-valued feature

    def __init__(
        self,
        cardinalities: Sequence[int],
        shared_dim: int,
        specific_dim: int,
        n_domains: int,
        init_std: float = 0.01,
        slots: Sequence[int] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not torchrec_available():
            raise ConfigError(
                "the TorchRec embedding backend needs torchrec and an fbgemm-gpu build for this torch; "
                "docs/scaling.md gives the install lines (torch 2.13: torchrec 1.8.0 + fbgemm-gpu-cpu 1.8.0)"
            )
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

        cards = check_table_args(cardinalities, shared_dim, specific_dim, n_domains, init_std)
        self.cardinalities, self.shared_dim, self.specific_dim, self.n_domains = (
            tuple(cards),
            shared_dim,
            specific_dim,
            n_domains,
        )
        self.total = sum(cards)
        widths = [
            int(w) for w in (slots if slots is not None else getattr(cardinalities, "slots", None) or [1] * len(cards))
        ]
        field = torch.repeat_interleave(torch.arange(len(cards)), torch.tensor(widths))  # (S,)
        offsets = torch.tensor([0, *cards[:-1]], dtype=torch.int64).cumsum(0)
        self.register_buffer("slot_field", field)
        self.register_buffer("slot_offsets", offsets[field], persistent=False)
        self.register_buffer("slot_pooled", (torch.tensor(widths) > 1)[field], persistent=False)

        def init(w: Tensor) -> Tensor:
            return nn.init.normal_(w, 0.0, init_std)

        tables = [
            EmbeddingBagConfig(
                name="shared",
                embedding_dim=shared_dim,
                num_embeddings=self.total,
                feature_names=["shared"],
                pooling=PoolingType.MEAN,
                init_fn=init,
            )
        ]
        if specific_dim > 0:
            tables.append(
                EmbeddingBagConfig(
                    name="specific",
                    embedding_dim=specific_dim,
                    num_embeddings=n_domains * self.total,
                    feature_names=["specific"],
                    pooling=PoolingType.MEAN,
                    init_fn=init,
                )
            )
        self.tables = EmbeddingBagCollection(tables=tables, device=torch.device(device) if device is not None else None)

    @property
    def out_dim(self) -> int:
        return self.shared_dim + self.specific_dim

    @classmethod
    def from_feature_embedding(cls, emb: FeatureEmbedding) -> TorchRecEmbedding:
        """The same lookup with `emb`'s weights (its slot layout included)."""
        slots = (
            None
            if emb.slot_field is None
            else torch.bincount(emb.slot_field, minlength=len(emb.cardinalities)).tolist()
        )
        out = cls(
            emb.cardinalities,
            emb.shared_dim,
            emb.specific_dim,
            emb.n_domains,
            slots=slots,
            device=emb.shared.weight.device,
        )
        with torch.no_grad():
            out.tables.embedding_bags["shared"].weight.copy_(emb.shared.weight)
            if emb.specific is not None:
                out.tables.embedding_bags["specific"].weight.copy_(emb.specific.weight)
        return out

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:
        """x: (B, S) local ids per slot; domain: (B,) -> (B, F, K)."""
        from torchrec import KeyedJaggedTensor

        B, S = x.shape
        if S != len(self.slot_field):
            raise ValueError(f"input has {S} columns but the slot layout has {len(self.slot_field)}")
        F = len(self.cardinalities)
        idx = x.long() + self.slot_offsets  # (B, S) global ids, slots of a feature side by side
        keep = (x != PAD_ID) | ~self.slot_pooled  # (B, S): scalar slots always count
        lengths = (
            torch.zeros(B, F, dtype=torch.int64, device=x.device).index_add_(1, self.slot_field, keep.long()).flatten()
        )  # (B·F,) one bag per (row, feature)
        keys, values, lens = ["shared"], [idx[keep]], [lengths]
        if self.specific_dim > 0:
            keys.append("specific")
            values.append((domain.unsqueeze(1) * self.total + idx)[keep])
            lens.append(lengths)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=torch.cat(lens))
        pooled = self.tables(kjt)
        pooled = pooled.wait() if hasattr(pooled, "wait") else pooled  # a sharded collection returns an awaitable
        parts = pooled.to_dict()
        e = parts["shared"].view(B, F, self.shared_dim)
        if self.specific_dim > 0:
            e = torch.cat([e, parts["specific"].view(B, F, self.specific_dim)], dim=-1)
        return e  # (B, F, K)
