"""Every registered model, every flag combination: builds, trains a step with finite loss,
round-trips through safetensors with identical predictions. No skip list."""

from __future__ import annotations

import itertools
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from crossctr.data.dataset import Batch
from crossctr.losses import DomainWeights, click_loss
from crossctr.models import REGISTRY, build_model
from crossctr.training.config import TrainConfig
from crossctr.training.trainer import make_optimizers

SMALL = {"shared_dim": 4, "specific_dim": 2, "attention_hidden": (4, 2), "deep": (8, 4)}
CARDS, N_DOMAINS = [7, 5, 9], 3


def _optional_choices(annotation: typing.Any) -> list[typing.Any] | None:
    """The values of an optional flag (`bool | None`, `Literal[...] | None`), None left out."""
    args = typing.get_args(annotation)
    if type(None) in args and len(args) == 2:
        return _choices(next(a for a in args if a is not type(None)))
    return None


def _choices(annotation: typing.Any) -> list[typing.Any] | None:
    if annotation is bool:
        return [False, True]
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return None


def flag_combinations(name: str) -> list[dict[str, typing.Any]]:
    """The full product of every bool / Literal field of a model's config, plus specific_dim 0."""
    cfg_cls = REGISTRY[name].config
    flags = {k: _choices(f.annotation) for k, f in cfg_cls.model_fields.items() if k != "name"}
    flags = {k: v for k, v in flags.items() if v}
    if "specific_dim" in cfg_cls.model_fields:
        flags["specific_dim"] = [0, 2]
    keys = sorted(flags)
    combos = [dict(zip(keys, vals, strict=False)) for vals in itertools.product(*(flags[k] for k in keys))]
    # Optional flags (added later, None = the old behaviour): each value once, the rest default.
    for k, f in cfg_cls.model_fields.items():
        combos += [{k: v} for v in _optional_choices(f.annotation) or []]
    return combos


def _cases() -> list[tuple[str, dict[str, typing.Any]]]:
    """Every registered name; a second name for an already covered model class (a preset such as
    cnan_plus) runs its own defaults and its optional flags, not the whole product again."""
    seen, cases = set(), []
    for name in sorted(REGISTRY, key=lambda n: (n.count("_plus"), n)):
        build = REGISTRY[name].build
        combos = flag_combinations(name)
        if build in seen:
            combos = [c for c in combos if len(c) == 1 and c.keys() - {"specific_dim"}] + [{}]
        seen.add(build)
        cases += [(name, c) for c in combos]
    return cases


CASES = _cases()


def _batch(seed: int = 0, n: int = 32) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], 1)
    d = torch.arange(n) % N_DOMAINS  # every domain present
    return Batch(x, d, torch.randint(0, 2, (n,), generator=g).float())


def test_registry_is_covered() -> None:
    assert {"cnan", "single"} <= set(REGISTRY)
    assert all(len(flag_combinations(n)) >= 2 for n in REGISTRY)


@pytest.mark.parametrize("name,flags", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_model_contract(name: str, flags: dict, tmp_path: Path) -> None:
    cfg = REGISTRY[name].config.model_validate({"name": name, **SMALL, **flags})
    torch.manual_seed(0)
    model = build_model(cfg, CARDS, N_DOMAINS)
    batch = _batch()
    out = model(batch)
    assert out.logits.shape == (32,)
    loss = click_loss(out.logits, batch.label, batch.domain, DomainWeights(N_DOMAINS))
    for v in out.aux_losses.values():
        assert v.ndim == 0
        loss = loss + 0.1 * v
    assert torch.isfinite(loss)
    opts = make_optimizers(model, TrainConfig())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss.backward()
    for o in opts:
        o.step()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "a training step changed nothing"

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    again = build_model(cfg, CARDS, N_DOMAINS)
    again.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(_batch(1)).logits, again(_batch(1)).logits)
