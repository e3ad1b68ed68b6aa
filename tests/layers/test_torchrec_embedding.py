"""The TorchRec lookup behind the EmbeddingLookup seam: the same embeddings, gradients and model
outputs as FeatureEmbedding. Skipped where torchrec (with an fbgemm build for this torch) is absent."""

from __future__ import annotations

import pytest
import torch

from crossctr.layers.embedding import FeatureEmbedding
from crossctr.layers.torchrec_embedding import torchrec_available

pytestmark = pytest.mark.skipif(
    not torchrec_available(),
    reason="torchrec / fbgemm-gpu for this torch not installed (see docs/scaling.md to install it)",
)


@pytest.mark.parametrize("slots", [None, [1, 3, 1]])
def test_same_embeddings_and_gradients_as_feature_embedding(slots) -> None:
    from crossctr.layers.torchrec_embedding import TorchRecEmbedding

    torch.manual_seed(0)
    ref = FeatureEmbedding([5, 7, 4], shared_dim=6, specific_dim=3, n_domains=3, slots=slots)
    trec = TorchRecEmbedding.from_feature_embedding(ref)
    width = 3 if slots is None else 5
    x = torch.randint(1, 4, (16, width))
    if slots is not None:
        x[:4, 1:4] = 0  # all-padding multi-valued cells
        x[4:8, 2:4] = 0
    d = torch.arange(16) % 3
    a, b = ref(x, d), trec(x, d)
    assert a.shape == b.shape == (16, 3, 9) and torch.allclose(a, b, atol=1e-6)
    w = torch.randn_like(a)
    (a * w).sum().backward()
    (b * w).sum().backward()
    assert torch.allclose(ref.shared.weight.grad, trec.tables.embedding_bags["shared"].weight.grad, atol=1e-6)
    assert torch.allclose(ref.specific.weight.grad, trec.tables.embedding_bags["specific"].weight.grad, atol=1e-6)


def test_cnan_with_a_torchrec_lookup_scores_as_before() -> None:
    from crossctr.data.dataset import Batch
    from crossctr.layers.torchrec_embedding import TorchRecEmbedding
    from crossctr.models import build_model, parse_model_config
    from crossctr.training.distributed import replace_embedding

    torch.manual_seed(0)
    m = build_model(
        parse_model_config(
            {"name": "cnan", "shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [16, 8]}
        ),
        [9, 6, 12],
        3,
    ).eval()
    batch = Batch(torch.randint(1, 6, (32, 3)), torch.arange(32) % 3, torch.zeros(32))
    with torch.no_grad():
        before = m(batch).logits
        replace_embedding(m, TorchRecEmbedding.from_feature_embedding(m.embedding))
        after = m(batch).logits
    assert torch.allclose(before, after, atol=1e-6)
