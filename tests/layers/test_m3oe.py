from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossctr.layers.m3oe import StackedNormMLP, balance_domains, norm_block


def _member(stack: StackedNormMLP, j: int, x: torch.Tensor) -> torch.Tensor:
    """Member j run alone, as a plain Linear → LayerNorm → ReLU chain."""
    for w, b, g, s in zip(stack.weights, stack.biases, stack.gains, stack.shifts, strict=False):
        x = torch.relu(F.layer_norm(F.linear(x, w[j].t(), b[j]), (w.shape[-1],), g[j], s[j]))
    return x


def test_stack_equals_each_member_alone() -> None:
    torch.manual_seed(0)
    stack = StackedNormMLP(3, 5, (7, 4))
    with torch.no_grad():
        for g, s in zip(stack.gains, stack.shifts, strict=False):  # per-member scale and shift, not the identity
            g.normal_()
            s.normal_()
    x = torch.randn(6, 5)
    out = stack(x)
    assert out.shape == (6, 3, 4)
    for j in range(3):
        torch.testing.assert_close(out[:, j], _member(stack, j, x))
    per = torch.randn(6, 3, 5)  # member j reads its own slice
    out = stack(per)
    for j in range(3):
        torch.testing.assert_close(out[:, j], _member(stack, j, per[:, j]))


def test_stack_at_fixed_seed() -> None:
    torch.manual_seed(0)
    stack = StackedNormMLP(2, 3, (2,))
    out = stack(torch.tensor([[1.0, -1.0, 0.5]]))
    # A LayerNorm over two features gives ±1 before the ReLU: one unit on, one off, per member.
    torch.testing.assert_close(out.sort(-1).values, torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]), atol=1e-3, rtol=0)


def test_balance_is_own_weight_plus_equal_share_of_the_others() -> None:
    torch.manual_seed(0)
    D = torch.randn(5, 4, 3)  # (B, N, H)
    d = torch.tensor([0, 3, 1, 2, 3])
    w = torch.tensor(0.7)
    got = balance_domains(D, d, w)
    for i in range(5):
        k = int(d[i])
        expect = w * D[i, k] + sum((1 - w) / 3 * D[i, j] for j in range(4) if j != k)
        torch.testing.assert_close(got[i], expect)


def test_balance_with_one_domain_scales_its_expert() -> None:
    D = torch.randn(3, 1, 2)
    torch.testing.assert_close(balance_domains(D, torch.zeros(3, dtype=torch.long), torch.tensor(0.6)), 0.6 * D[:, 0])


def test_balance_weight_gets_gradient() -> None:
    a = torch.tensor(1.0, requires_grad=True)
    balance_domains(torch.randn(4, 3, 2), torch.tensor([0, 1, 2, 0]), torch.sigmoid(a)).sum().backward()
    assert a.grad is not None and a.grad != 0


def test_norm_block_is_linear_layernorm_relu() -> None:
    torch.manual_seed(0)
    block = norm_block(4, 3)
    x = torch.randn(5, 4)
    torch.testing.assert_close(block(x), torch.relu(F.layer_norm(block[0](x), (3,))))


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(in_dim=0), dict(hidden=()), dict(hidden=(0,))])
def test_invalid_args(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        StackedNormMLP(**(dict(n=2, in_dim=3, hidden=(4,)) | kwargs))
