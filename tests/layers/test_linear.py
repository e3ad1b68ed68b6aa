"""`linear`: F.linear with a oneDNN path for CPU fp32; values and gradients must match F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossctr.layers import mlp
from crossctr.layers.mlp import linear


@pytest.mark.parametrize("shape, n_out, bias", [((64, 24), 16, True), ((8, 5, 12), 3, True), ((33, 7), 1, False)])
def test_matches_f_linear_values_and_gradients(shape: tuple[int, ...], n_out: int, bias: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(n_out, shape[-1], requires_grad=True)
    b = torch.randn(n_out, requires_grad=True) if bias else None
    g = torch.randn(*shape[:-1], n_out)
    y = linear(x, w, b)
    grads = torch.autograd.grad(y, [x, w] + ([b] if bias else []), g)
    y_ref = F.linear(x, w, b)
    grads_ref = torch.autograd.grad(y_ref, [x, w] + ([b] if bias else []), g)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_column_slice_of_a_weight_and_empty_input() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 10)
    x = torch.randn(6, 5)
    torch.testing.assert_close(linear(x, w[:, 5:]), F.linear(x, w[:, 5:]), rtol=1e-5, atol=1e-5)
    assert linear(torch.randn(0, 5), w[:, :5]).shape == (0, 3)


def test_falls_back_where_onednn_does_not_apply() -> None:
    x, w = torch.randn(4, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    assert torch.equal(linear(x, w), F.linear(x, w))  # float64: plain F.linear
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x.float(), w.float()).dtype == torch.bfloat16  # autocast rules still apply


def test_same_model_output_with_and_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = mlp.MLP(20, (32, 8))
    x = torch.randn(50, 20)
    fast = net(x)
    monkeypatch.setattr(mlp, "_ONEDNN_LINEAR", None)
    torch.testing.assert_close(fast, net(x), rtol=1e-5, atol=1e-5)
