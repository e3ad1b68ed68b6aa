from __future__ import annotations

import pytest
import torch

from crossctr.layers.pruner import DomainPruner, weighting_factors


def test_pruner_is_one_bias_free_linear_map_of_domain_and_neurons() -> None:
    torch.manual_seed(0)
    p = DomainPruner(domain_dim=3, in_dim=4, out_dim=4, form="scaling", beta=2.0, epsilon=0.0)
    z, h = torch.randn(5, 3), torch.randn(5, 4)
    v = torch.cat([z, h], 1) @ p.weight.t()
    torch.testing.assert_close(p(z, h), 2.0 * torch.sigmoid(v))


def test_forms_at_fixed_seed() -> None:
    torch.manual_seed(0)
    v = torch.randn(2, 3)
    alpha = torch.tensor(3.0)
    torch.testing.assert_close(weighting_factors(v, "binarization", alpha, 2.0, 0.0), torch.sigmoid(3.0 * v))
    torch.testing.assert_close(weighting_factors(v, "scaling", alpha, 2.0, 0.0), 2.0 * torch.sigmoid(v))
    torch.testing.assert_close(weighting_factors(v, "fusion", alpha, 2.0, 0.0), 2.0 * torch.sigmoid(3.0 * v))
    # pinned numbers: torch.randn(2, 3) after manual_seed(0), fusion with α = 3, β = 2, ε = 0.5
    got = weighting_factors(v, "fusion", alpha, 2.0, 0.5)
    expect = torch.tensor([[1.9805, 0.5862, 0.0], [1.6924, 0.0, 0.0]])
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=0)


def test_factors_below_epsilon_are_zero_and_pass_no_gradient() -> None:
    v = torch.tensor([[-10.0, 0.0, 10.0]], requires_grad=True)
    pi = weighting_factors(v, "fusion", 1.0, 2.0, 0.01)
    assert pi[0, 0] == 0 and pi[0, 1] == 1.0 and 1.99 < pi[0, 2] < 2.0
    pi.sum().backward()
    assert v.grad[0, 0] == 0 and v.grad[0, 1] > 0


def test_annealing_drives_binarization_to_a_step() -> None:
    v = torch.tensor([[-0.3, 0.2]])
    soft = weighting_factors(v, "binarization", 1.0, 2.0, 0.01)
    hard = weighting_factors(v, "binarization", 100.0, 2.0, 0.01)
    assert 0.3 < soft[0, 0] < 0.7 and 0.3 < soft[0, 1] < 0.7
    torch.testing.assert_close(hard, torch.tensor([[0.0, 1.0]]), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(domain_dim=0), dict(in_dim=0), dict(out_dim=0), dict(form="hard"), dict(beta=0.0), dict(epsilon=-1.0)],
)
def test_invalid_args(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DomainPruner(**(dict(domain_dim=2, in_dim=3, out_dim=3) | kwargs))
    if "form" in kwargs:
        with pytest.raises(ValueError):
            weighting_factors(torch.zeros(1, 1), kwargs["form"], 1.0, 2.0, 0.0)
