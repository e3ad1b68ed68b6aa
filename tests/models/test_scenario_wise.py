"""AdaSparse and M3oE, the Scenario-Wise-Rec benchmark's best models: shapes, per-domain parts,
the pruner's annealing, M3oE's balance, a short fit, a run folder round trip and ONNX parity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from crossctr.data.dataset import Batch
from crossctr.models import REGISTRY, AdaSparse, M3oE, build_model, parse_model_config

SMALL = dict(shared_dim=4, specific_dim=2, deep=(8, 4))
SMALL_EXTRA: dict[str, dict[str, Any]] = {"adasparse": {}, "m3oe": dict(star=(8, 6), tower=(6,), n_experts=3)}
CARDS, N = [7, 5, 9], 3
MODELS = ["adasparse", "m3oe"]


def _model(name: str, **kw: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = REGISTRY[name].config.model_validate({"name": name, **SMALL, **SMALL_EXTRA[name], **kw})
    return build_model(cfg, CARDS, N)


def _batch(n: int = 24) -> Batch:
    g = torch.Generator().manual_seed(3)
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], 1)
    return Batch(x, torch.arange(n) % N, torch.randint(0, 2, (n,), generator=g).float())


def test_registered_with_benchmark_defaults() -> None:
    assert REGISTRY["adasparse"].build is AdaSparse and REGISTRY["m3oe"].build is M3oE
    a = parse_model_config({"name": "adasparse"})
    assert (a.deep, a.dropout, a.batch_norm, a.form, a.epsilon, a.beta, a.alpha, a.alpha_step) == (
        (32, 32),
        0.2,
        True,
        "fusion",
        0.01,
        2.0,
        1.0,
        1e-4,
    )
    m = parse_model_config({"name": "m3oe"})
    assert (m.star, m.deep, m.tower, m.n_experts, m.balance_init, m.expert_weight_init) == (
        (128, 64),
        (64, 32),
        (32,),
        4,
        1.0,
        1.0,
    )


@pytest.mark.parametrize("name", MODELS)
def test_shape_and_no_aux_losses(name: str) -> None:
    out = _model(name)(_batch())
    assert out.logits.shape == (24,) and torch.isfinite(out.logits).all()
    assert out.aux_losses == {}


# Parameters with a leading domain axis that a row of domain d may only reach at index d.
PER_DOMAIN = {
    "adasparse": lambda m: [m.domain_embedding.weight],
    "m3oe": lambda m: [
        *m.towers.weights,
        *m.heads.weights,
        *m.gates.logits.weights,
        m.star.domain_weight,
        m.star.domain_bias,
    ],
}


# AdaSparse: BatchNorm mixes the rows of a training batch; with the 0.01-std embeddings the tiny test layers start dead.
ISOLATED = {"adasparse": dict(batch_norm=False, dropout=0.0, embedding_init_std=0.5)}


@pytest.mark.parametrize("name", MODELS)
def test_a_domains_logit_only_reaches_its_own_parts(name: str) -> None:
    m, b = _model(name, **ISOLATED.get(name, {})), _batch()
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


def test_adasparse_neutral_pruners_give_the_plain_dnn() -> None:
    """Zero pruner weights: fusion factors β σ(0) = 1, so the model is the DNN on [z ⊕ E]."""
    m, b = _model("adasparse", dropout=0.0, batch_norm=False).eval(), _batch()
    with torch.no_grad():
        for p in [m.input_pruner, *m.pruners]:
            p.weight.zero_()
        h = torch.cat([m.domain_embedding(b.domain), m.embedding(b.features, b.domain).flatten(1)], 1)
        for layer in m.layers:
            lin = layer.net[0]
            h = torch.relu(h @ lin.weight.t() + lin.bias)
        expect = (h @ m.head.weight.t() + m.head.bias).squeeze(-1)
        out = m(b)
    torch.testing.assert_close(out.logits, expect, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.extras["kept"], torch.ones(24, 3))


def test_adasparse_alpha_anneals_in_training_only_and_is_saved() -> None:
    m, b = _model("adasparse", alpha=1.0, alpha_step=0.5), _batch()
    m.eval()
    m(b)
    assert float(m.alpha) == 1.0
    m.train()
    m(b).logits.sum().backward()  # backward after the step's α was used: no in-place error
    m(b)
    assert float(m.alpha) == 2.0
    assert "alpha" in m.state_dict()
    again = _model("adasparse", alpha=1.0, alpha_step=0.5)
    again.load_state_dict(m.state_dict())
    assert float(again.alpha) == 2.0


def test_adasparse_epsilon_prunes_and_field_pruning_shares_a_factor() -> None:
    m, b = _model("adasparse", form="scaling", epsilon=1.0).eval(), _batch()  # β σ(v) < 1 ⇔ v < 0: about half pruned
    kept = m(b).extras["kept"]
    assert ((kept > 0.1) & (kept < 0.9)).float().mean() > 0.5
    f = _model("adasparse", input_pruning="field").eval()
    assert f.input_pruner.weight.shape[0] == len(CARDS)
    assert f(b).logits.shape == (24,)


def test_m3oe_gates_read_the_bottom_without_gradient_and_balance_weights_learn() -> None:
    m, b = _model("m3oe"), _batch()
    seen = {}
    m.gates.register_forward_pre_hook(lambda mod, args: seen.setdefault("h", args[0]))
    out = m(b)
    assert not seen["h"].requires_grad  # ⊘h: the gates cannot move the bottom
    out.logits.sum().backward()
    assert m.gates.logits.weights[0].grad.abs().sum() > 0  # they still learn from the click
    assert m.balance_logit.grad != 0 and m.expert_logit.grad != 0
    g = out.extras["gates"]
    assert g.shape == (24, 3) and torch.allclose(g.sum(1), torch.ones(24))


def test_m3oe_without_tower_and_with_one_domain() -> None:
    assert _model("m3oe", tower=()).towers is None
    assert _model("m3oe", tower=())(_batch()).logits.shape == (24,)
    torch.manual_seed(0)
    one = build_model(
        REGISTRY["m3oe"].config.model_validate({"name": "m3oe", **SMALL, **SMALL_EXTRA["m3oe"]}), CARDS, 1
    )
    b = _batch()
    assert one(Batch(b.features, torch.zeros(24, dtype=torch.long), b.label)).logits.shape == (24,)


@pytest.mark.parametrize("name", MODELS)
def test_learns_tiny_data(name: str, tiny_data, tiny_fit_auc) -> None:
    torch.manual_seed(0)
    cfg = REGISTRY[name].config.model_validate(
        {"name": name, "shared_dim": 8, "specific_dim": 2, "deep": (32, 16), **SMALL_EXTRA[name]}
    )
    auc = tiny_fit_auc(build_model(cfg, tiny_data.encoder.cardinalities, 3), tiny_data)
    assert auc > 0.6, (name, auc)


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


@pytest.mark.parametrize(
    "name,extra", [("adasparse", {}), ("adasparse", {"form": "binarization", "input_pruning": "field"}), ("m3oe", {})]
)
def test_exports_to_onnx_with_parity(name: str, extra: dict) -> None:
    """Exported through their own eval forward, as the other newer models (serving.export)."""
    pytest.importorskip("onnxruntime")
    from crossctr.serving.export import InferenceGraph, _ort_session, onnx_bytes, random_rows

    cards = [9, 6, 12]
    torch.manual_seed(0)
    m = build_model(
        parse_model_config(
            {"name": name, "shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [16, 8], **extra}
        ),
        cards,
        N,
    ).eval()
    for p in m.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    graph = InferenceGraph({"joint": m}, {"A": "joint", "B": "joint", "C": "joint"}, ["A", "B", "C"]).eval()
    x, d = random_rows(cards, N, 257, seed=2)
    got = _ort_session(onnx_bytes(graph, len(cards))).run(["prob"], {"features": x, "domain": d})[0]
    with torch.no_grad():
        want = graph(torch.from_numpy(x), torch.from_numpy(d)).numpy()
    assert np.max(np.abs(got - want)) < 1e-5


def test_m3oe_tasks_add_a_task_view_and_a_tower_per_domain_and_task() -> None:
    m, b = _model("m3oe", tasks=2), _batch()
    out = m(b)
    assert out.logits.shape == (24,) and out.task_logits.shape == (24, 2)
    T = 3  # the click and two extra tasks
    for k, t in ((0, 0), (2, 1), (1, 2)):
        m.zero_grad()
        y = out.logits if t == 0 else out.task_logits[:, t - 1]
        y[b.domain == k].sum().backward(retain_graph=True)
        w = m.heads.weights[0].grad  # (N*T, ·, 1), domain-major
        others = [i for i in range(N * T) if i != k * T + t]
        assert w[k * T + t].abs().sum() > 0 and w[others].abs().sum() == 0, (k, t)
        assert m.task_experts.weights[0].grad.abs().sum() > 0 and m.task_balance_logit.grad != 0
    assert _model("m3oe").task_experts is None and _model("m3oe")(b).task_logits is None


def test_m3oe_learns_a_second_label(tmp_path, tiny_table, tiny_schema) -> None:
    """`purchase` after a click, driven by brand parity (as tests/training/test_multitask.py)."""
    import json

    import pyarrow as pa

    from crossctr.data.dataset import prepare
    from crossctr.schema import DatasetSchema
    from crossctr.training.run import RunConfig, train_run

    t = tiny_table(6000)
    rng = np.random.default_rng(3)
    brand = np.array([int(x[1:]) for x in t.column("brand").to_pylist()])
    click = t.column("click").to_numpy()
    buy = (rng.random(len(click)) < np.where(brand % 2 == 0, 0.8, 0.15)).astype(float)
    t = t.append_column("purchase", pa.array(np.where(click == 1, buy, np.nan), mask=click == 0))
    data = prepare(
        DatasetSchema.model_validate({**tiny_schema.model_dump(mode="json", exclude_none=True), "tasks": ["purchase"]}),
        tmp_path,
        t,
    )
    model = dict(name="m3oe", shared_dim=8, specific_dim=2, star=[32, 16], deep=[16, 8], tower=[8], tasks=1)
    train = {"epochs": 4, "batch_size": 128, "progress": False, "threads": 1, "device": "cpu"}
    res = train_run(
        RunConfig.model_validate({"dataset": "unused", "model": model, "train": train}), tmp_path / "run", data
    )
    per_task = json.loads((tmp_path / "run" / "metrics.json").read_text())["tasks"]["purchase"]["test"]
    assert per_task["overall"]["auc"] > 0.7, per_task
    assert res.metrics["test"]["overall"]["auc"] > 0.6
