"""Row-wise Adagrad: the update rule, laziness, sparse = dense, its state size and its place in the trainer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crossctr.training.config import ROWWISE_ADAGRAD_LR, TrainConfig
from crossctr.training.optim import RowWiseAdagrad
from crossctr.training.trainer import make_optimizers


def _reference(
    w: torch.Tensor, acc: torch.Tensor, ids: torch.Tensor, grads: torch.Tensor, lr: float, eps: float
) -> None:
    """The rule written row by row: sum duplicate rows, G += mean(g^2), w -= lr g / (sqrt(G) + eps)."""
    for r in ids.unique().tolist():
        g = grads[ids == r].sum(0)
        acc[r] += (g * g).mean()
        w[r] -= lr * g / (acc[r].sqrt() + eps)


@pytest.mark.parametrize("sparse", [True, False])
def test_steps_match_the_row_by_row_rule(sparse: bool) -> None:
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4, sparse=sparse)
    w_ref, acc_ref = emb.weight.detach().clone(), torch.zeros(10)
    opt = RowWiseAdagrad([emb.weight], lr=0.05, eps=1e-6)
    for step in range(3):
        ids = torch.tensor([1, 3, 3, 7, 1, 1]) if step != 1 else torch.tensor([0, 3])
        coef = torch.randn(len(ids), 4)
        opt.zero_grad()
        (emb(ids) * coef).sum().backward()
        opt.step()
        _reference(w_ref, acc_ref, ids, coef, 0.05, 1e-6)  # d(sum(e * coef))/de = coef per occurrence
    torch.testing.assert_close(emb.weight.detach(), w_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(opt.state[emb.weight]["sum"], acc_ref, rtol=1e-6, atol=1e-9)


def test_untouched_rows_keep_weights_and_state_and_state_is_one_float_per_row() -> None:
    emb = nn.Embedding(1000, 16, sparse=True)
    before = emb.weight.detach().clone()
    opt = RowWiseAdagrad([emb.weight], lr=0.1)
    emb(torch.tensor([5, 900])).sum().backward()
    opt.step()
    moved = (emb.weight.detach() != before).any(1).nonzero().flatten().tolist()
    assert moved == [5, 900]
    acc = opt.state[emb.weight]["sum"]
    assert acc.shape == (1000,) and int((acc != 0).sum()) == 2
    # the first step moves each coordinate by lr * g / rms(g): here g = 1 everywhere
    torch.testing.assert_close(before[5] - emb.weight.detach()[5], torch.full((16,), 0.1), rtol=1e-5, atol=1e-6)


def test_sparse_and_dense_gradients_give_the_same_tables() -> None:
    torch.manual_seed(1)
    a, b = nn.Embedding(50, 8, sparse=True), nn.Embedding(50, 8, sparse=False)
    b.load_state_dict(a.state_dict())
    oa, ob = RowWiseAdagrad([a.weight], lr=0.02), RowWiseAdagrad([b.weight], lr=0.02)
    for _ in range(4):
        ids, coef = torch.randint(0, 50, (64,)), torch.randn(64, 8)
        for emb, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            (emb(ids) * coef).sum().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(2)
    emb = nn.Embedding(20, 4, sparse=True)
    opt = RowWiseAdagrad([emb.weight], lr=0.05)
    ids = torch.tensor([1, 2, 2, 9])
    for _ in range(2):
        opt.zero_grad()
        emb(ids).pow(2).sum().backward()
        opt.step()
    twin = nn.Embedding(20, 4, sparse=True)
    twin.load_state_dict(emb.state_dict())
    twin_opt = RowWiseAdagrad([twin.weight], lr=0.05)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # as read back from a checkpoint: no shared tensors
    for e, o in ((emb, opt), (twin, twin_opt)):
        o.zero_grad()
        e(ids).pow(2).sum().backward()
        o.step()
    assert torch.equal(emb.weight, twin.weight)


def test_bad_arguments_are_refused() -> None:
    w = nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="lr must be > 0"):
        RowWiseAdagrad([w], lr=0.0)
    with pytest.raises(ValueError, match="2-D tables"):
        RowWiseAdagrad([nn.Parameter(torch.zeros(3))])


class _Model(nn.Module):
    def __init__(self, sparse: bool) -> None:
        super().__init__()
        self.table = nn.Embedding(30, 4, sparse=sparse)
        self.head = nn.Linear(4, 1)


@pytest.mark.parametrize("sparse", [True, False])
def test_make_optimizers_gives_every_table_rowwise_adagrad_when_asked(sparse: bool) -> None:
    m = _Model(sparse)
    opts = make_optimizers(m, TrainConfig(sparse_optimizer="rowwise_adagrad"))
    assert [type(o).__name__ for o in opts] == ["Adam", "RowWiseAdagrad"]
    assert opts[1].param_groups[0]["params"] == [m.table.weight]
    assert opts[1].param_groups[0]["lr"] == ROWWISE_ADAGRAD_LR
    assert all(p is not m.table.weight for p in opts[0].param_groups[0]["params"])
    opts = make_optimizers(m, TrainConfig(sparse_optimizer="rowwise_adagrad", sparse_lr=0.3))
    assert opts[1].param_groups[0]["lr"] == 0.3


def test_default_keeps_sparse_adam_on_sparse_tables_and_adam_on_dense_ones() -> None:
    assert [type(o).__name__ for o in make_optimizers(_Model(True), TrainConfig())] == ["Adam", "SparseAdam"]
    assert [type(o).__name__ for o in make_optimizers(_Model(False), TrainConfig())] == ["Adam"]
    opts = make_optimizers(_Model(True), TrainConfig(sparse_lr=0.004))
    assert opts[1].param_groups[0]["lr"] == 0.004 and opts[0].param_groups[0]["lr"] == 1e-3


def test_config_refuses_an_unknown_table_optimizer() -> None:
    from crossctr.schema import ConfigError

    with pytest.raises((ValueError, ConfigError), match="sparse_optimizer"):
        TrainConfig(sparse_optimizer="sgd")


def test_checkpoint_helpers_carry_its_state() -> None:
    from crossctr.training.checkpoint import flatten_optimizer, restore_optimizer

    emb = nn.Embedding(12, 3, sparse=True)
    opt = RowWiseAdagrad([emb.weight], lr=0.05)
    emb(torch.tensor([4, 4, 7])).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer(opt, "tables")
    fresh = RowWiseAdagrad([emb.weight], lr=0.5)
    restore_optimizer(fresh, "tables", {k: v.clone() for k, v in tensors.items()}, meta)
    st = fresh.state[emb.weight]
    assert torch.equal(st["sum"], opt.state[emb.weight]["sum"]) and float(st["step"]) == 1.0
    assert fresh.param_groups[0]["lr"] == 0.05
