from __future__ import annotations

import pytest
import torch

from crossctr.layers import DomainHeads


def test_matches_per_row_computation() -> None:
    torch.manual_seed(0)
    heads = DomainHeads(3, n_domains=3, n_inputs=2)
    with torch.no_grad():
        heads.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    oc, od = torch.randn(6, 3), torch.randn(6, 3)
    domain = torch.tensor([0, 1, 2, 2, 0, 1])
    out = heads(oc, od, domain=domain)
    W, b = heads.weight.detach(), heads.bias.detach()
    for i in range(6):
        d = int(domain[i])
        # y^d = W_c^d O^c + W^d O^d + b^d
        ref = sum(W[d, k] * oc[i, k] for k in range(3)) + sum(W[d, 3 + k] * od[i, k] for k in range(3)) + b[d]
        assert out[i].item() == pytest.approx(ref.item(), abs=1e-6)
    assert out.shape == (6,)
    # domain passed positionally gives the same result
    torch.testing.assert_close(heads(oc, od, domain), out)


def test_single_input_and_gradient_only_to_used_heads() -> None:
    torch.manual_seed(0)
    heads = DomainHeads(4, n_domains=3)
    assert heads.weight.shape == (3, 4) and heads.bias.shape == (3,)
    heads(torch.randn(2, 4), domain=torch.tensor([0, 2])).sum().backward()
    assert heads.weight.grad[1].abs().sum() == 0 and heads.bias.grad.tolist() == [1.0, 0.0, 1.0]


def test_wrong_number_of_inputs() -> None:
    heads = DomainHeads(2, n_domains=2, n_inputs=2)
    with pytest.raises(ValueError, match="n_inputs"):
        heads(torch.randn(3, 2), domain=torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs, name", [(dict(in_dim=0), "in_dim"), (dict(n_domains=0), "n_domains"), (dict(n_inputs=0), "n_inputs")]
)
def test_invalid_args(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        DomainHeads(**(dict(in_dim=2, n_domains=2) | kwargs))
