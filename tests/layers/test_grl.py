from __future__ import annotations

import pytest
import torch

from crossctr.layers import GradientReversal, grad_reverse


@pytest.mark.parametrize("scale", [1.0, 0.3, 2.0])
def test_forward_identity_backward_reversed(scale: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, requires_grad=True)
    y = grad_reverse(x, scale)
    assert torch.equal(y, x)
    upstream = torch.randn(4, 3)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -scale * upstream)


def test_module_inside_a_graph() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    x = torch.randn(5, 3)
    (GradientReversal(0.5)(x * w) ** 2).sum().backward()
    plain = w.detach().clone().requires_grad_()
    ((x * plain) ** 2).sum().backward()
    torch.testing.assert_close(w.grad, -0.5 * plain.grad)


def test_module_scale_can_change_and_is_validated() -> None:
    grl = GradientReversal(1.0)
    grl.scale = 3.0
    x = torch.ones(2, requires_grad=True)
    grl(x).sum().backward()
    assert x.grad.tolist() == [-3.0, -3.0]
    with pytest.raises(ValueError, match="scale"):
        GradientReversal(-1.0)
