"""Shared-Bottom, MMoE, PLE, STAR and EPNet: shapes, per-domain isolation, and a short fit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossctr.data.dataset import Batch
from crossctr.models import PLE, REGISTRY, STAR, EPNet, MMoE, SharedBottom, build_model

SMALL = dict(shared_dim=4, specific_dim=2, deep=(8, 4))
CARDS, N = [7, 5, 9], 3
MODELS = ["shared_bottom", "mmoe", "ple", "star", "epnet"]
SMALL_EXTRA: dict[str, dict[str, Any]] = {
    "shared_bottom": dict(tower=(6,)),
    "mmoe": dict(tower=(6,), n_experts=3),
    "ple": dict(tower=(6,)),
    "star": dict(aux_hidden=6),
    "epnet": dict(gate_hidden=6),
}


def _model(name: str, **kw: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = REGISTRY[name].config.model_validate({"name": name, **SMALL, **SMALL_EXTRA[name], **kw})
    return build_model(cfg, CARDS, N)


def _batch(n: int = 24) -> Batch:
    g = torch.Generator().manual_seed(3)
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], 1)
    return Batch(x, torch.arange(n) % N, torch.randint(0, 2, (n,), generator=g).float())


# Parameters with a leading domain axis that a row of domain d may only reach at index d.
PER_DOMAIN: dict[str, Callable[[Any], list[torch.Tensor]]] = {
    "shared_bottom": lambda m: [*m.towers.weights, *m.towers.biases],
    "mmoe": lambda m: [*m.towers.weights, *m.gates.logits.weights],
    "ple": lambda m: [*m.towers.weights, *m.levels[-1].domain_gates.logits.weights],
    "star": lambda m: [
        *(layer.domain_weight for layer in m.fcn.layers),
        *(layer.domain_bias for layer in m.fcn.layers),
        m.norm.domain_gamma,
        m.domain_embedding.weight,
    ],
    "epnet": lambda m: [m.domain_embedding.weight],
}


@pytest.mark.parametrize("name", MODELS)
def test_shape_and_no_aux_losses(name: str) -> None:
    out = _model(name)(_batch())
    assert out.logits.shape == (24,) and torch.isfinite(out.logits).all()
    assert out.aux_losses == {}


@pytest.mark.parametrize("name", MODELS)
def test_a_domains_logit_only_reaches_its_own_tower(name: str) -> None:
    m, b = _model(name), _batch()
    for k in range(N):
        m.zero_grad()
        m(b).logits[b.domain == k].sum().backward()
        for p in PER_DOMAIN[name](m):
            others = [j for j in range(N) if j != k]
            assert p.grad[others].abs().sum() == 0, (name, k, p.shape)
            assert p.grad[k].abs().sum() > 0, (name, k, p.shape)


@pytest.mark.parametrize("name", MODELS)
def test_attention_hidden_adds_cnan_attention(name: str) -> None:
    assert "attention_shared" not in _model(name)(_batch()).extras
    att = _model(name, attention_hidden=(4,))(_batch()).extras["attention_shared"]
    assert att.shape == (24, len(CARDS)) and ((att > 0) & (att < 1)).all()


def test_mmoe_gates_are_the_rows_own_softmax() -> None:
    m, b = _model("mmoe"), _batch()
    g = m(b).extras["gates"]
    x0 = m.embedding(b.features, b.domain).flatten(1)
    w, c = m.gates.logits.weights[0], m.gates.logits.biases[0]
    for i in (0, 1, 5):
        k = int(b.domain[i])
        torch.testing.assert_close(g[i], torch.softmax(x0[i] @ w[k] + c[k], -1))


def test_ple_single_level_keeps_other_domains_experts_out() -> None:
    m, b = _model("ple", levels=1, shared_experts=1, specific_experts=2), _batch()
    m(b).logits[b.domain == 0].sum().backward()
    w = m.levels[0].experts.weights[0].grad  # experts: 1 shared, then 2 per domain
    assert w[:3].abs().sum(dim=(1, 2)).gt(0).all()  # shared and domain 0's
    assert w[3:].abs().sum() == 0  # domains 1 and 2's experts
    assert m.levels[0].shared_gate is None


def test_ple_levels_feed_shared_mixture_forward() -> None:
    m = _model("ple", levels=3)
    assert [lvl.shared_gate is not None for lvl in m.levels] == [True, True, False]
    m(_batch()).logits.sum().backward()
    assert m.levels[0].shared_gate.logits.weights[0].grad.abs().sum() > 0


def test_star_starts_as_shared_network_and_eval_uses_domain_statistics() -> None:
    m, b = _model("star", aux_hidden=0), _batch(30)
    m.train()
    for _ in range(20):  # fill the moving statistics
        m(b)
    m.eval()
    x0 = m.embedding(b.features, b.domain).flatten(1)
    pn = m.norm
    z = (x0 - pn.running_mean[b.domain]) / torch.sqrt(pn.running_var[b.domain] + pn.eps)
    h = z
    for i, layer in enumerate(m.fcn.layers):  # W_p = 1, b_p = 0: the shared layers
        h = F.linear(h, layer.weight.t(), layer.bias)
        h = torch.relu(h) if i < len(m.fcn.layers) - 1 else h
    torch.testing.assert_close(m(b).logits, h.squeeze(-1), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(pn.running_mean[0], pn.running_mean[1])


def test_star_batch_norm_ablation_and_aux_net() -> None:
    assert isinstance(_model("star", norm="batch").norm, torch.nn.BatchNorm1d)
    assert _model("star", aux_hidden=0).aux is None
    m, b = _model("star"), _batch()
    with torch.no_grad():
        before = m(b).logits
        m.aux[1].bias.add_(1.0)  # the auxiliary logit is added to the main one
        torch.testing.assert_close(m(b).logits, before + 1.0)


def test_epnet_gate_reads_embeddings_without_gradient() -> None:
    m, b = _model("epnet"), _batch()
    seen = {}
    m.gate.register_forward_pre_hook(lambda mod, args: seen.setdefault("prior", args[0]))
    out = m(b)
    K = m.embedding.out_dim
    (g,) = torch.autograd.grad(seen["prior"][:, K:].sum(), m.embedding.shared.weight, allow_unused=True)
    assert g is None  # ⊘(E): the gate cannot move the embeddings
    delta = out.extras["field_scale"]
    assert delta.shape == (24, len(CARDS)) and ((delta > 0) & (delta < 2)).all()
    assert m.network.cross is not None and _model("epnet", body="deep").network.cross is None


@pytest.mark.parametrize("name", MODELS)
def test_learns_tiny_data(name: str, tiny_data, tiny_fit_auc) -> None:
    torch.manual_seed(0)
    cfg = REGISTRY[name].config.model_validate(
        {"name": name, "shared_dim": 8, "specific_dim": 2, "deep": (32, 16), **SMALL_EXTRA[name]}
    )
    auc = tiny_fit_auc(build_model(cfg, tiny_data.encoder.cardinalities, 3), tiny_data)
    assert auc > 0.6, (name, auc)


def test_classes_are_exported() -> None:
    for cls, name in ((SharedBottom, "shared_bottom"), (MMoE, "mmoe"), (PLE, "ple"), (STAR, "star"), (EPNet, "epnet")):
        assert REGISTRY[name].build is cls


@pytest.mark.parametrize("name", MODELS)
def test_trains_through_train_run_and_reloads(name: str, tiny_data, tmp_path) -> None:
    from crossctr.inference import Predictor
    from crossctr.training.run import RunConfig, train_run

    model = {"name": name, "shared_dim": 8, "specific_dim": 2, "deep": [16, 8]}
    res = train_run(
        RunConfig(dataset="unused", model=model, train={"epochs": 1, "progress": False}), tmp_path, tiny_data
    )
    assert set(res.metrics["test"]) == {"A", "B", "C", "overall"}
    assert all(np.isfinite(m["auc"]) for m in res.metrics["test"].values())
    p = Predictor.load(tmp_path).predict_encoded(tiny_data.test)
    assert p.shape == (len(tiny_data.test),) and ((p > 0) & (p < 1)).all()
