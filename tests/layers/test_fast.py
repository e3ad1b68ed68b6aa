"""layers.fast: each speed workaround computes what the plain PyTorch op computes, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossctr.layers import fast, mlp
from crossctr.layers.fast import Linear, autocast_input, linear, rows_by_group


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
    for a, r in zip(grads, grads_ref, strict=False):
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
    fast_out = net(x)
    monkeypatch.setattr(fast, "_ONEDNN_LINEAR", None)
    torch.testing.assert_close(fast_out, net(x), rtol=1e-5, atol=1e-5)


def test_linear_module_is_nn_linear_and_frozen_keeps_gradients_off_its_weights() -> None:
    torch.manual_seed(0)
    layer, ref = Linear(6, 3), nn.Linear(6, 3)
    ref.load_state_dict(layer.state_dict())  # same parameters, same keys
    x = torch.randn(10, 6, requires_grad=True)
    g = torch.randn(10, 3)
    got = torch.autograd.grad(layer(x), [x, layer.weight, layer.bias], g)
    want = torch.autograd.grad(ref(x), [x, ref.weight, ref.bias], g)
    for a, r in zip(got, want, strict=False):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)
    y = layer(x, frozen=True)
    torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)
    (y * g).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    torch.testing.assert_close(x.grad, want[0], rtol=1e-5, atol=1e-5)


class _Tower(nn.Module):
    """An MLP that answers as the towers do: a tuple (output, nothing)."""

    def __init__(self, norm: bool) -> None:
        super().__init__()
        self.net = mlp.MLP(4, (6, 5), batch_norm=norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.net(x), None


def _towers(norm: bool = False) -> nn.ModuleList:
    torch.manual_seed(1)
    return nn.ModuleList(_Tower(norm) for _ in range(3))


def _by_row(towers: nn.ModuleList, x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """The plain reference: one row at a time through its group's module."""
    return torch.cat([towers[int(k)](x[i : i + 1])[0] for i, k in enumerate(group)])


@pytest.mark.parametrize("bucket", ["padded", "unpadded"])
def test_rows_by_group_equals_each_row_through_its_module(monkeypatch: pytest.MonkeyPatch, bucket: str) -> None:
    if bucket == "unpadded":
        monkeypatch.setattr(fast, "_bucket", lambda n: n)
    towers = _towers()
    x = torch.randn(37, 4, requires_grad=True)
    group = torch.tensor([0, 2] * 18 + [2])  # group 1 has no rows: its module never runs
    g = torch.randn(37, 5)
    (got,) = rows_by_group(towers, x, group)
    grads = torch.autograd.grad(got, [x, *towers.parameters()], g, allow_unused=True)
    want = _by_row(towers, x, group)
    grads_ref = torch.autograd.grad(want, [x, *towers.parameters()], g, allow_unused=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, r in zip(grads, grads_ref, strict=False):
        assert (a is None) == (r is None)
        if a is not None:
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


def test_rows_by_group_pads_to_few_shapes_and_never_pads_batch_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    x, group = torch.randn(37, 4), torch.tensor([0] * 13 + [1] * 12 + [2] * 12)
    rows_by_group([lambda t: (seen.append(len(t)) or t,) for _ in range(3)], x, group)
    assert seen == [16, 16, 16]  # 13 / 12 / 12 rows each run as 16
    towers = _towers(norm=True)
    calls: list[int] = []
    for m in towers:
        m.register_forward_hook(lambda mod, inp, out: calls.append(len(inp[0])))
    rows_by_group(towers, x, group)
    assert calls == [13, 12, 12]  # BatchNorm: copies would skew the batch statistics


def test_rows_by_group_traced_path_equals_eager_path() -> None:
    towers = _towers().eval()
    x = torch.randn(29, 4)
    group = torch.randint(0, 3, (29,))
    eager = rows_by_group(towers, x, group, outputs=2)
    traced = fast._rows_by_group_traceable(towers, x, group, outputs=2)
    assert eager[1] is None and traced[1] is None
    torch.testing.assert_close(traced[0], eager[0], rtol=1e-6, atol=1e-6)

    class Routed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.towers = towers

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return rows_by_group(self.towers, a, b)[0]

    with torch.no_grad():
        graph = torch.jit.trace(Routed(), (x, group), check_trace=False)
    x2, group2 = torch.randn(7, 4), torch.tensor([2, 2, 0, 2, 0, 0, 2])  # another size, a group with no rows
    torch.testing.assert_close(graph(x2, group2), _by_row(towers, x2, group2), rtol=1e-5, atol=1e-6)


def test_autocast_input_casts_once_under_autocast_only() -> None:
    x = torch.randn(3, 4)
    assert autocast_input(x) is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = autocast_input(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, x.to(torch.bfloat16))


@pytest.mark.skipif(fast._ONEDNN_LINEAR is None, reason="this torch build has no oneDNN")
def test_scoring_takes_onednn_on_every_shape_training_on_narrow_ones_without_avx512(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, ...]] = []
    real = fast._mm_t
    monkeypatch.setattr(fast, "_mm_t", lambda a, b, bias=None: calls.append(tuple(b.shape)) or real(a, b, bias))
    monkeypatch.setattr(fast, "_ONEDNN_TRAIN_EVERY_SHAPE", False)
    wide, narrow = Linear(16, 128), Linear(16, 8)
    x = torch.randn(4, 16)
    with torch.no_grad():
        wide(x), narrow(x)
    assert calls == [(128, 16), (8, 16)]  # scoring: both
    calls.clear()
    wide(x).sum().backward()
    assert calls == []  # training, wide: MKL
    narrow(x).sum().backward()
    assert calls and calls[0] == (8, 16)  # training, narrow: oneDNN forward (and backward)
    monkeypatch.setattr(fast, "_ONEDNN_TRAIN_EVERY_SHAPE", True)
    calls.clear()
    wide(x).sum().backward()
    assert calls and calls[0] == (128, 16)  # AVX-512: every shape
