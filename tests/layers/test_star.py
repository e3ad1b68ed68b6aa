from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossctr.layers.star import PartitionedNorm, StarFCN, StarLinear


def test_star_linear_with_unit_domain_weights_is_the_shared_linear() -> None:
    torch.manual_seed(0)
    layer = StarLinear(5, 3, n_domains=4)  # W_p = 1, b_p = 0 at init
    with torch.no_grad():
        layer.bias.normal_()
    x, d = torch.randn(8, 5), torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    torch.testing.assert_close(layer(x, d), F.linear(x, layer.weight.t(), layer.bias))


def test_star_linear_is_elementwise_product_per_row() -> None:
    torch.manual_seed(0)
    layer = StarLinear(4, 2, n_domains=3)
    with torch.no_grad():
        layer.domain_weight.normal_()
        layer.domain_bias.normal_()
    x, d = torch.randn(6, 4), torch.tensor([2, 0, 1, 1, 2, 0])
    out = layer(x, d)
    for i in range(6):
        p = int(d[i])
        w = layer.weight * layer.domain_weight[p]
        torch.testing.assert_close(out[i], x[i] @ w + layer.bias + layer.domain_bias[p])


def test_star_fcn_rows_do_not_touch_other_domains_weights() -> None:
    torch.manual_seed(0)
    fcn = StarFCN(4, (6, 1), n_domains=3)
    fcn(torch.randn(5, 4), torch.tensor([0, 2, 0, 2, 2])).sum().backward()
    for layer in fcn.layers:
        assert layer.domain_weight.grad[1].abs().sum() == 0 and layer.domain_bias.grad[1].abs().sum() == 0
        assert layer.domain_weight.grad[2].abs().sum() > 0
        assert layer.weight.grad.abs().sum() > 0


def test_partitioned_norm_trains_on_each_domains_batch_statistics() -> None:
    torch.manual_seed(0)
    pn = PartitionedNorm(3, n_domains=2)
    d = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    x = torch.randn(7, 3)
    x[d == 1] = x[d == 1] * 5 + 10  # a very different second domain
    out = pn(x, d)
    for k in range(2):  # each domain's rows come out standardised on their own
        torch.testing.assert_close(out[d == k].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[d == k].var(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    bn = torch.nn.BatchNorm1d(3)  # one domain's moving statistics move as BatchNorm's would on its rows
    bn(x[d == 1])
    torch.testing.assert_close(pn.running_mean[1], bn.running_mean)
    torch.testing.assert_close(pn.running_var[1], bn.running_var)


def test_partitioned_norm_eval_uses_each_domains_running_statistics() -> None:
    pn = PartitionedNorm(2, n_domains=3).eval()
    with torch.no_grad():
        pn.running_mean.copy_(torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 5.0]]))
        pn.running_var.copy_(torch.tensor([[1.0, 1.0], [4.0, 4.0], [9.0, 1.0]]))
        pn.domain_gamma[2] = torch.tensor([2.0, 1.0])
        pn.domain_beta[1] = torch.tensor([0.5, 0.5])
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    out = pn(x, torch.tensor([0, 1, 2]))
    expect = torch.tensor([[1.0, 2.0], [0.5, 0.5], [2.0 * 4.0 / 3.0, -3.0]])
    torch.testing.assert_close(out, expect, atol=1e-4, rtol=0)


def test_partitioned_norm_leaves_statistics_of_absent_domains() -> None:
    pn = PartitionedNorm(2, n_domains=3)
    pn(torch.randn(4, 2), torch.tensor([0, 0, 2, 0]))  # domain 1 absent, domain 2 has one row
    assert torch.equal(pn.running_mean[1:], torch.zeros(2, 2)) and torch.equal(pn.running_var[1:], torch.ones(2, 2))
    assert not torch.equal(pn.running_mean[0], torch.zeros(2))


@pytest.mark.parametrize("args", [(0, 2), (2, 0)])
def test_invalid_args(args: tuple) -> None:
    with pytest.raises(ValueError):
        StarLinear(*args, n_domains=2)
    with pytest.raises(ValueError):
        PartitionedNorm(*args)
