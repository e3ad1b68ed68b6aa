from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossctr.layers import AttentionUnit


def _set(unit: AttentionUnit, W0, b0, W1, b1, W2, b2) -> None:
    lin = [m for m in unit.score if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for m, (w, b) in zip(lin, [(W0, b0), (W1, b1), (W2, b2)], strict=False):
            m.weight.copy_(torch.tensor(w, dtype=torch.float32))
            m.bias.copy_(torch.tensor(b, dtype=torch.float32))


def _eq1_by_hand(e, W0, b0, W1, b1, W2, b2, act):
    """Eq. 1 with explicit loops, one feature at a time."""
    B, F, K = len(e), len(e[0]), len(e[0][0])
    g = [[[0.0] * K for _ in range(F)] for _ in range(B)]
    a = [[0.0] * F for _ in range(B)]
    for b in range(B):
        for f in range(F):
            x = e[b][f]
            h0 = [act(sum(W0[i][k] * x[k] for k in range(K)) + b0[i]) for i in range(len(W0))]
            h1 = [act(sum(W1[j][i] * h0[i] for i in range(len(h0))) + b1[j]) for j in range(len(W1))]
            z = sum(W2[0][j] * h1[j] for j in range(len(h1))) + b2[0]
            a[b][f] = 1.0 / (1.0 + math.exp(-z))
            g[b][f] = [a[b][f] * x[k] for k in range(K)]
    return np.array(g), np.array(a)


W0 = [[0.5, -1.0, 0.25], [1.0, 0.5, -0.5], [-0.3, 0.2, 0.8], [0.1, 0.1, 0.1]]
b0 = [0.1, -0.2, 0.0, 0.3]
W1 = [[1.0, -0.5, 0.3, 0.2], [-0.4, 0.6, 0.9, -1.0]]
b1 = [0.05, -0.1]
W2 = [[1.5, -2.0]]
b2 = [0.2]


@pytest.mark.parametrize(
    "activation, fn",
    [("relu", lambda v: max(v, 0.0)), ("sigmoid", lambda v: 1.0 / (1.0 + math.exp(-v)))],
)
def test_matches_eq1_by_hand(activation: str, fn) -> None:
    unit = AttentionUnit(3, hidden=(4, 2), activation=activation)
    _set(unit, W0, b0, W1, b1, W2, b2)
    rng = np.random.default_rng(0)
    e = rng.normal(size=(2, 3, 3)).astype(np.float32)
    g, a = unit(torch.from_numpy(e))
    g_ref, a_ref = _eq1_by_hand(e.tolist(), W0, b0, W1, b1, W2, b2, fn)
    assert g.shape == (2, 3, 3) and a.shape == (2, 3)
    np.testing.assert_allclose(a.detach().numpy(), a_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.detach().numpy(), g_ref, rtol=1e-5, atol=1e-6)


def test_one_unit_shared_by_features() -> None:
    torch.manual_seed(0)
    unit = AttentionUnit(5)
    # paper sizes K -> 64 -> 32 -> 1, no feature index anywhere in the weights
    shapes = [tuple(p.shape) for p in unit.parameters()]
    assert shapes == [(64, 5), (64,), (32, 64), (32,), (1, 32), (1,)]
    e = torch.randn(1, 2, 5)
    e[0, 1] = e[0, 0]  # two features with the same embedding get the same weight
    _, a = unit(e)
    assert a[0, 0] == a[0, 1]
    assert ((a > 0) & (a < 1)).all()


def test_invalid_args() -> None:
    with pytest.raises(ValueError, match="activation"):
        AttentionUnit(4, activation="gelu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim"):
        AttentionUnit(0)
