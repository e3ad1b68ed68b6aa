from __future__ import annotations

import pytest
import torch
from torch import nn

from crossctr.layers import MLP
from crossctr.layers.fast import Linear


def test_layer_order_and_out_dim() -> None:
    mlp = MLP(8, (16, 4), activation="relu", dropout=0.5, batch_norm=True)
    kinds = [type(m) for m in mlp.net]
    assert kinds == [Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout] * 2  # Linear: nn.Linear on the fast path
    assert mlp.out_dim == 4
    assert MLP(8, ()).out_dim == 8


def test_matches_manual_computation() -> None:
    torch.manual_seed(0)
    mlp = MLP(3, (5, 2), activation="sigmoid")
    x = torch.randn(4, 3)
    l1, l2 = mlp.net[0], mlp.net[2]
    ref = torch.sigmoid(torch.sigmoid(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias)
    torch.testing.assert_close(mlp(x), ref)


def test_last_layer_is_activated() -> None:
    torch.manual_seed(0)
    out = MLP(6, (8, 3), activation="relu")(torch.randn(64, 6))
    assert (out >= 0).all() and (out == 0).any()


def test_empty_hidden_is_identity() -> None:
    x = torch.randn(2, 5)
    assert torch.equal(MLP(5, ())(x), x)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    mlp = MLP(4, (32,), dropout=0.5)
    x = torch.randn(8, 4)
    mlp.eval()
    assert torch.equal(mlp(x), mlp(x))
    mlp.train()
    assert not torch.equal(mlp(x), mlp(x))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(in_dim=0), "in_dim"),
        (dict(hidden=(4, 0)), "hidden"),
        (dict(dropout=1.0), "dropout"),
        (dict(activation="gelu"), "activation"),
    ],
)
def test_invalid_args(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MLP(**(dict(in_dim=3, hidden=(4,)) | kwargs))
