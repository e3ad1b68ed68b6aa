from __future__ import annotations

import numpy as np
import torch

from crossctr.layers import FactorizationMachine


def test_matches_pairwise_sum() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(3, 5, 4))
    out = FactorizationMachine()(torch.from_numpy(e))
    ref = np.zeros(3)
    for b in range(3):
        for i in range(5):
            for j in range(i + 1, 5):
                ref[b] += sum(e[b, i, k] * e[b, j, k] for k in range(4))
    assert out.shape == (3,)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10)


def test_hand_values() -> None:
    # <e1,e2> + <e1,e3> + <e2,e3> = (1*0+2*1) + (1*3+2*(-1)) + (0*3+1*(-1)) = 2 + 1 - 1 = 2
    e = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]]])
    assert FactorizationMachine()(e).tolist() == [2.0]
    # a single feature has no pair
    assert FactorizationMachine()(torch.randn(2, 1, 3)).abs().max() < 1e-6
