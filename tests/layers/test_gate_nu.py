from __future__ import annotations

import pytest
import torch

from crossctr.layers.gate_nu import GateNU


def test_gate_is_gamma_times_sigmoid_of_a_relu_layer() -> None:
    torch.manual_seed(0)
    gate = GateNU(5, out_dim=3, hidden=4, gamma=2.0)
    x = torch.randn(6, 5)
    h = torch.relu(x @ gate.fc1.weight.t() + gate.fc1.bias)
    expect = 2.0 * torch.sigmoid(h @ gate.fc2.weight.t() + gate.fc2.bias)
    torch.testing.assert_close(gate(x), expect)


def test_neutral_gate_scales_by_one_and_range_is_zero_to_gamma() -> None:
    gate = GateNU(4, out_dim=2, hidden=3)
    with torch.no_grad():
        gate.fc2.weight.zero_()
        gate.fc2.bias.zero_()
    assert torch.equal(gate(torch.randn(5, 4)), torch.ones(5, 2))
    with torch.no_grad():
        gate.fc2.bias.copy_(torch.tensor([50.0, -50.0]))
    s = gate(torch.randn(5, 4))
    torch.testing.assert_close(s[:, 0], torch.full((5,), 2.0))
    torch.testing.assert_close(s[:, 1], torch.zeros(5), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(in_dim=0), dict(out_dim=0), dict(hidden=0), dict(gamma=0.0)])
def test_invalid_args(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GateNU(**(dict(in_dim=2, out_dim=2) | kwargs))
