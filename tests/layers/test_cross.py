from __future__ import annotations

import numpy as np
import pytest
import torch

from crossctr.layers import CrossNetwork


def _eq2_by_hand(x0: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x_{l+1} = x_0 (x_l . w_l) + b_l + x_l, one row at a time."""
    out = np.empty_like(x0)
    for r in range(x0.shape[0]):
        x = x0[r].copy()
        for k in range(w.shape[0]):
            s = sum(float(x[i]) * float(w[k, i]) for i in range(x0.shape[1]))
            x = np.array([x0[r, i] * s + b[k, i] + x[i] for i in range(x0.shape[1])])
        out[r] = x
    return out


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_matches_eq2_by_hand(n_layers: int) -> None:
    torch.manual_seed(0)
    net = CrossNetwork(4, n_layers=n_layers)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        net.b.copy_(torch.from_numpy(rng.normal(size=(n_layers, 4)).astype(np.float32)))
    x0 = rng.normal(size=(3, 4)).astype(np.float32)
    out = net(torch.from_numpy(x0))
    ref = _eq2_by_hand(x0, net.w.detach().numpy(), net.b.detach().numpy())
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_params_and_init() -> None:
    net = CrossNetwork(6, n_layers=2)
    assert net.w.shape == (2, 6) and net.b.shape == (2, 6)
    assert torch.count_nonzero(net.b) == 0
    assert net.out_dim == 6


def test_zero_weights_is_identity() -> None:
    net = CrossNetwork(3, n_layers=2)
    with torch.no_grad():
        net.w.zero_()
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(net(x0), x0)


def test_invalid_args() -> None:
    with pytest.raises(ValueError, match="dim"):
        CrossNetwork(0)
    with pytest.raises(ValueError, match="n_layers"):
        CrossNetwork(3, n_layers=-1)


def test_bf16_input_stays_bf16_and_gradients_reach_the_fp32_weights() -> None:
    torch.manual_seed(0)
    net = CrossNetwork(6, n_layers=2)
    x0 = torch.randn(4, 6)
    ref = net(x0)
    out = net(x0.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16  # an fp32 bias would promote x_l to fp32 (a cast back per layer)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert net.w.grad is not None and net.w.grad.dtype == torch.float32 and net.b.grad.dtype == torch.float32
