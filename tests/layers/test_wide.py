from __future__ import annotations

import pytest
import torch

from crossctr.layers import WideLinear


def test_zero_init() -> None:
    wide = WideLinear([3, 4])
    assert torch.count_nonzero(wide.weight.weight) == 0 and wide.bias.item() == 0.0
    assert wide(torch.tensor([[0, 3], [2, 1]])).tolist() == [0.0, 0.0]


def test_matches_manual_sum() -> None:
    wide = WideLinear([3, 4, 2])
    with torch.no_grad():
        wide.weight.weight.copy_(torch.arange(9, dtype=torch.float32).unsqueeze(1) * 0.5)
        wide.bias.fill_(-1.0)
    x = torch.tensor([[0, 0, 0], [2, 3, 1], [1, 2, 0]])
    out = wide(x)
    offsets = [0, 3, 7]
    ref = [-1.0 + sum(0.5 * (offsets[f] + int(x[b, f])) for f in range(3)) for b in range(3)]
    assert out.shape == (3,)
    assert out.tolist() == pytest.approx(ref)
    # feature 1 id 0 is a different weight than feature 0 id 0
    assert ref[0] == -1.0 + 0.5 * (0 + 3 + 7)


def test_gradient_hits_only_used_rows() -> None:
    wide = WideLinear([3, 4])
    wide(torch.tensor([[1, 2]])).sum().backward()
    assert wide.weight.weight.grad.flatten().nonzero().flatten().tolist() == [1, 5]
    assert wide.bias.grad.item() == 1.0


def test_invalid_args() -> None:
    with pytest.raises(ValueError, match="cardinalities"):
        WideLinear([])


def test_multi_valued_feature_adds_the_mean_weight_of_its_values() -> None:
    wide = WideLinear([3, 6], slots=[1, 3])  # feature 2 takes 3 slots, 0 = padding
    with torch.no_grad():
        wide.weight.weight.copy_(torch.arange(9, dtype=torch.float32).unsqueeze(1))  # w[offset + id] = offset + id
    x = torch.tensor([[2, 4, 5, 0], [1, 0, 0, 0], [0, 3, 3, 3]])
    # feature 1 at offset 0; feature 2 at offset 3: mean over its non-padding ids (none -> 0)
    want = torch.tensor([2 + (7 + 8) / 2, 1 + 0.0, 0 + 6.0])
    assert torch.allclose(wide(x), want)
    again = WideLinear([3, 6])  # rebuilt from plain cardinalities, as from a run folder
    again.load_state_dict(wide.state_dict())
    assert torch.allclose(again(x), want)
