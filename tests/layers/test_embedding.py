from __future__ import annotations

import pytest
import torch

from crossctr.layers import FeatureEmbedding


def make(specific_dim: int = 2) -> FeatureEmbedding:
    torch.manual_seed(0)
    return FeatureEmbedding([3, 5, 2], shared_dim=4, specific_dim=specific_dim, n_domains=3, init_std=0.1)


def test_shape_and_out_dim() -> None:
    emb = make()
    x = torch.tensor([[0, 4, 1], [2, 0, 0]])
    out = emb(x, torch.tensor([0, 2]))
    assert out.shape == (2, 3, 6)
    assert emb.out_dim == 6
    assert emb.offsets.tolist() == [0, 3, 8]
    assert emb.offsets.dtype == torch.int64


def test_offsets_separate_features() -> None:
    emb = make()
    out = emb(torch.tensor([[0, 0, 0]]), torch.tensor([1]))
    # feature f id 0 is row offsets[f] of the shared table, so the three rows differ
    assert torch.equal(out[0, 0, :4], emb.shared.weight[0])
    assert torch.equal(out[0, 1, :4], emb.shared.weight[3])
    assert torch.equal(out[0, 2, :4], emb.shared.weight[8])
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_shared_and_specific_parts_are_the_right_rows() -> None:
    emb = make()
    x = torch.tensor([[2, 4, 1]] * 3)
    domain = torch.tensor([0, 1, 2])
    out = emb(x, domain)
    total = 10
    for b in range(3):
        for f, (local, off) in enumerate(zip([2, 4, 1], [0, 3, 8], strict=False)):
            assert torch.equal(out[b, f, :4], emb.shared.weight[off + local])
            assert torch.equal(out[b, f, 4:], emb.specific.weight[b * total + off + local])
    # the shared part is the same for every domain, the specific part is not
    assert torch.equal(out[0, :, :4], out[1, :, :4])
    assert not torch.allclose(out[0, :, 4:], out[1, :, 4:])
    assert not torch.allclose(out[1, :, 4:], out[2, :, 4:])


def test_no_specific_part() -> None:
    emb = make(specific_dim=0)
    assert emb.specific is None and emb.out_dim == 4
    x = torch.tensor([[1, 2, 0]])
    out = emb(x, torch.tensor([2]))
    assert torch.equal(out[0], emb.shared.weight[torch.tensor([1, 5, 8])])


def test_init_std_and_gradients() -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding([1000], shared_dim=16, specific_dim=8, n_domains=2, init_std=0.05)
    assert abs(emb.shared.weight.std().item() - 0.05) < 0.005
    assert abs(emb.specific.weight.std().item() - 0.05) < 0.005
    emb(torch.tensor([[7]]), torch.tensor([1])).sum().backward()
    # only the gathered rows get a gradient: shared row 7, specific row 1 * 1000 + 7
    assert emb.shared.weight.grad.abs().sum(1).nonzero().flatten().tolist() == [7]
    assert emb.specific.weight.grad.abs().sum(1).nonzero().flatten().tolist() == [1007]


def test_sparse_flag() -> None:
    emb = FeatureEmbedding([3], shared_dim=2, specific_dim=2, n_domains=2, sparse=True)
    emb(torch.tensor([[1]]), torch.tensor([0])).sum().backward()
    assert emb.shared.weight.grad.is_sparse and emb.specific.weight.grad.is_sparse


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(cardinalities=[]), "cardinalities"),
        (dict(cardinalities=[3, 0]), "cardinalities"),
        (dict(shared_dim=0), "shared_dim"),
        (dict(specific_dim=-1), "specific_dim"),
        (dict(n_domains=0), "n_domains"),
        (dict(init_std=0.0), "init_std"),
    ],
)
def test_invalid_args(kwargs: dict, name: str) -> None:
    args = dict(cardinalities=[3], shared_dim=4, specific_dim=2, n_domains=2) | kwargs
    with pytest.raises(ValueError, match=name):
        FeatureEmbedding(**args)
