from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossctr.layers.experts import SoftmaxGates, StackedMLP, logit_towers, take_domain


def _member(stack: StackedMLP, j: int, x: torch.Tensor) -> torch.Tensor:
    """Member j run alone, as a plain Linear/ReLU chain."""
    last = len(stack.weights) - 1
    for i, (w, b) in enumerate(zip(stack.weights, stack.biases, strict=False)):
        x = F.linear(x, w[j].t(), b[j])
        if i < last or stack.activate_last:
            x = torch.relu(x)
    return x


@pytest.mark.parametrize("activate_last", [True, False])
def test_stack_equals_each_expert_alone(activate_last: bool) -> None:
    torch.manual_seed(0)
    stack = StackedMLP(3, 5, (7, 4), activate_last=activate_last)
    x = torch.randn(6, 5)
    out = stack(x)
    assert out.shape == (6, 3, 4)
    for j in range(3):
        torch.testing.assert_close(out[:, j], _member(stack, j, x))
    per = torch.randn(6, 3, 5)  # member j reads its own slice
    out = stack(per)
    for j in range(3):
        torch.testing.assert_close(out[:, j], _member(stack, j, per[:, j]))


def test_softmax_gates_sum_to_one_and_read_their_own_input() -> None:
    torch.manual_seed(0)
    gates = SoftmaxGates(4, n_gates=2, n_experts=3)
    g = gates(torch.randn(5, 4))
    assert g.shape == (5, 2, 3) and (g > 0).all()
    torch.testing.assert_close(g.sum(-1), torch.ones(5, 2))
    x = torch.randn(5, 2, 4)
    w, b = gates.logits.weights[0], gates.logits.biases[0]
    torch.testing.assert_close(gates(x)[:, 1], torch.softmax(x[:, 1] @ w[1] + b[1], -1))


def test_take_domain_sends_gradient_to_own_slice_only() -> None:
    x = torch.randn(4, 3, 2, requires_grad=True)
    d = torch.tensor([0, 2, 2, 1])
    out = take_domain(x, d)
    torch.testing.assert_close(out, torch.stack([x[i, int(d[i])] for i in range(4)]))
    out.sum().backward()
    expect = torch.zeros(4, 3, 2)
    expect[torch.arange(4), d] = 1.0
    assert torch.equal(x.grad, expect)


def test_towers_of_other_domains_get_no_gradient() -> None:
    torch.manual_seed(0)
    towers = StackedMLP(3, 4, (5, 1), activate_last=False)
    d = torch.tensor([0, 0, 2])
    take_domain(towers(torch.randn(3, 4)), d).sum().backward()
    for w in towers.weights:
        assert w.grad[1].abs().sum() == 0  # no row of domain 1
        assert w.grad[0].abs().sum() > 0 and w.grad[2].abs().sum() > 0


def test_logit_towers_end_in_a_linear_logit_per_domain() -> None:
    torch.manual_seed(0)
    towers = logit_towers(3, 4, (5,), dropout=0.0, batch_norm=True)
    x = torch.randn(8, 4)
    out = towers.eval()(x)
    assert out.shape == (8, 3, 1) and not towers.activate_last
    assert (out < 0).any()  # no activation after the last layer: a logit can be negative
    assert [tuple(w.shape) for w in towers.weights] == [(3, 4, 5), (3, 5, 1)]
    assert towers.norms is not None and len(towers.norms) == 1  # batch norm on the hidden layer only


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(in_dim=0), dict(hidden=()), dict(hidden=(0,)), dict(dropout=1.0)])
def test_invalid_args(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        StackedMLP(**(dict(n=2, in_dim=3, hidden=(4,)) | kwargs))


@pytest.mark.parametrize("activate_last", [True, False])
def test_batch_norm_normalises_each_member_over_the_batch(activate_last: bool) -> None:
    torch.manual_seed(0)
    stack = StackedMLP(3, 5, (7, 4), activate_last=activate_last, batch_norm=True)
    assert len(stack.norms) == (2 if activate_last else 1)  # never on a logit layer
    x = torch.randn(64, 5)
    out = stack(x)  # training mode: batch statistics
    for j in range(3):  # member j alone: Linear -> BatchNorm over the batch -> ReLU
        h = F.linear(x, stack.weights[0][j].t(), stack.biases[0][j])
        h = torch.relu((h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5))
        h = F.linear(h, stack.weights[1][j].t(), stack.biases[1][j])
        if activate_last:
            h = torch.relu((h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5))
        torch.testing.assert_close(out[:, j], h, atol=1e-5, rtol=1e-4)
