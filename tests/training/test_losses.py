"""The loss module: the objective's terms, and its data-parallel form summing to the one-process loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F

from crossctr.data.batch import Batch, Shard
from crossctr.losses import DomainWeights, Objective, shard_share, task_counts
from crossctr.schema import ConfigError
from crossctr.training.config import TrainConfig
from crossctr.training.distributed import shard_mask

B, N = 43, 3


@dataclass
class _Out:  # what a model returns, as far as the objective reads it
    logits: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    task_logits: torch.Tensor | None = None


def _rows(seed: int = 0) -> dict[str, torch.Tensor]:
    """One global batch: per-row outputs (leaves, to take gradients) and labels."""
    g = torch.Generator().manual_seed(seed)
    dom = torch.randint(0, N, (B,), generator=g)
    dom[:5] = 2  # domain 2's rows do not split evenly over 2 or 3 ranks
    tasks = (torch.rand(B, 2, generator=g) < 0.4).float()
    tasks[::3, 1] = float("nan")  # rows without the second extra label
    return {
        "logits": torch.randn(B, generator=g).requires_grad_(),
        "task_logits": torch.randn(B, 2, generator=g).requires_grad_(),
        "nll": torch.rand(B, generator=g).requires_grad_(),  # a per-domain auxiliary term's rows (CNAN's L_d)
        "ent": torch.randn(B, generator=g).requires_grad_(),  # a row-mean auxiliary term's rows (CNAN's adv)
        "label": (torch.rand(B, generator=g) < 0.3).float(),
        "domain": dom,
        "tasks": tasks,
    }


def _loss(
    obj: Objective, r: dict[str, torch.Tensor], idx: torch.Tensor, shard: Shard | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The objective on rows `idx`, as a model on that shard would report them."""
    dom = r["domain"][idx]
    batch = Batch(torch.zeros(len(idx), 1, dtype=torch.long), dom, r["label"][idx], r["tasks"][idx], shard)
    aux = {"domain": DomainWeights(N, "equal").mean(r["nll"][idx], dom, shard), "adv": r["ent"][idx].mean()}
    return obj(_Out(r["logits"][idx], aux, r["task_logits"][idx]), batch)


def _objective(weighting: str, domain: torch.Tensor) -> Objective:
    cfg = TrainConfig(
        domain_weighting=weighting, weighting_power=0.3, loss_weights={"domain": 0.2, "adv": 0.7}, task_weight=0.5
    )
    train_domain = torch.cat([domain, torch.zeros(60, dtype=torch.long)])  # a training mix other than the batch's
    return Objective.from_config(cfg, N, train_domain)


@pytest.mark.parametrize("weighting", ["equal", "rows", "power"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_of_a_global_batch_average_to_the_one_process_loss_and_gradient(world: int, weighting: str) -> None:
    r = _rows()
    obj = _objective(weighting, r["domain"])
    leaves = [r["logits"], r["task_logits"], r["nll"], r["ent"]]
    whole, whole_terms = _loss(obj, r, torch.arange(B), None)
    want_grads = torch.autograd.grad(whole, leaves)

    shard = Shard(world, B, torch.bincount(r["domain"], minlength=N), task_counts(r["tasks"], r["domain"], N))
    total, terms, grads = torch.tensor(0.0), dict.fromkeys(whole_terms, 0.0), [torch.zeros_like(t) for t in leaves]
    for rank in range(world):
        idx = shard_mask(r["domain"], N, rank, world).nonzero().squeeze(1)
        loss_r, terms_r = _loss(obj, r, idx, shard)
        total = total + loss_r.detach()
        terms = {k: terms[k] + terms_r[k] for k in terms}
        grads = [a + b for a, b in zip(grads, torch.autograd.grad(loss_r, leaves), strict=False)]
    # DDP averages over the ranks: the averages are the one-process values.
    assert torch.allclose(total / world, whole.detach(), atol=1e-6)
    for k, v in whole_terms.items():
        assert torch.allclose(terms[k] / world, v, atol=1e-6), k
    for got, want in zip(grads, want_grads, strict=False):
        assert torch.allclose(got / world, want, atol=1e-6)


def test_without_the_global_counts_the_shards_would_not_add_up() -> None:
    """The shard's global counts matter: the per-domain terms of local means miss the global value."""
    r = _rows(1)
    obj = _objective("equal", r["domain"])
    whole, _ = _loss(obj, r, torch.arange(B), None)
    parts = []
    for rank in range(2):
        idx = shard_mask(r["domain"], N, rank, 2).nonzero().squeeze(1)
        parts.append(_loss(obj, r, idx, None)[0].detach() * (2 * len(idx) / B))
    assert not torch.allclose(sum(parts) / 2, whole.detach(), atol=1e-4)


def test_objective_is_click_plus_weighted_tasks_and_auxiliary_terms() -> None:
    r = _rows(2)
    dom, label = r["domain"], r["label"]
    obj = _objective("equal", dom)
    total, terms = _loss(obj, r, torch.arange(B), None)
    bce = F.binary_cross_entropy_with_logits(r["logits"], label, reduction="none")
    click = sum(0.5 * bce[dom == d].mean() for d in range(N))
    task = 0.0
    for t in range(2):
        has = ~torch.isnan(r["tasks"][:, t])
        tb = F.binary_cross_entropy_with_logits(r["task_logits"][has, t], r["tasks"][has, t], reduction="none")
        task = task + sum(0.5 * tb[dom[has] == d].mean() for d in range(N))
    l_d = sum(r["nll"][dom == d].mean() for d in range(N))
    want = click + 0.5 * task + 0.2 * l_d + 0.7 * r["ent"].mean()
    assert torch.allclose(total, want, atol=1e-6)
    assert sorted(terms) == ["adv", "click", "domain", "tasks"]
    assert torch.allclose(terms["click"], click.detach(), atol=1e-6) and torch.allclose(
        terms["tasks"], task.detach(), atol=1e-6
    )


def test_rows_and_power_weighting_of_the_click() -> None:
    r = _rows(3)
    bce = F.binary_cross_entropy_with_logits(r["logits"], r["label"], reduction="none").detach()
    out = _Out(r["logits"].detach())
    batch = Batch(torch.zeros(B, 1, dtype=torch.long), r["domain"], r["label"])
    rows, _ = Objective(N, "rows")(out, batch)
    assert torch.allclose(rows, 0.5 * bce.mean(), atol=1e-6)
    scale = torch.tensor([2.0, 1.0, 0.5])
    power, _ = Objective(N, "power", row_scale=scale)(out, batch)
    assert torch.allclose(power, 0.5 * (bce * scale[r["domain"]]).mean(), atol=1e-6)
    assert shard_share(batch) == 1.0 and shard_share(
        Batch(batch.features[:10], batch.domain[:10], batch.label[:10], shard=Shard(3, B, torch.ones(N)))
    ) == pytest.approx(30 / B)


def test_an_auxiliary_loss_without_a_weight_and_task_heads_without_labels_are_errors() -> None:
    batch = Batch(torch.zeros(2, 1, dtype=torch.long), torch.tensor([0, 1]), torch.tensor([1.0, 0.0]))
    with pytest.raises(
        ConfigError, match=r"auxiliary loss 'adv' with no weight; add it to train.loss_weights \(now \['disc'\]\)"
    ):
        Objective(2, "equal", {"disc": 1.0})(_Out(torch.zeros(2), {"adv": torch.tensor(1.0)}), batch)
    with pytest.raises(ConfigError, match="declares no `tasks` columns"):
        Objective(2, "equal")(_Out(torch.zeros(2), task_logits=torch.zeros(2, 1)), batch)
