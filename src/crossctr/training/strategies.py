"""Training strategies of the paper's §3.2, each a small object over the one fit loop.

    joint       one model on every domain's rows (CNAN-AT, DANN, CNAN₁, CNAN₂)
    self_train  one model per domain, trained on that domain's rows only
    src_only    one model trained on the source (rich) domain, scoring every domain
    finetune    trained on the source, then fine-tuned on the other domains' rows; the
                source keeps the pretrained model (`source_model`), the others get the
                fine-tuned one

A strategy returns `members` (name -> trained model) and `route` (domain name -> member
that scores it), so evaluation, reports and serving treat every strategy alike. Each fit has
a key (its name in `fits`), under which the trainer's checkpoint records it, so a resumed
self_train or finetune run skips the members and stages that had finished.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from crossctr.data.dataset import EncodedSplit
from crossctr.schema import ConfigError, StrictModel
from crossctr.training.trainer import FitResult, Trainer

__all__ = [
    "JointStrategy",
    "SelfTrainStrategy",
    "SrcOnlyStrategy",
    "FineTuneStrategy",
    "StrategyConfig",
    "StrategyResult",
    "run_strategy",
]

log = logging.getLogger(__name__)

ModelFactory = Callable[[], nn.Module]


class JointStrategy(StrictModel):
    name: Literal["joint"] = "joint"


class SelfTrainStrategy(StrictModel):
    name: Literal["self_train"] = "self_train"


class SrcOnlyStrategy(StrictModel):
    name: Literal["src_only"] = "src_only"
    source: str | None = None  # domain name; None = the domain with most training rows


class FineTuneStrategy(StrictModel):
    name: Literal["finetune"] = "finetune"
    source: str | None = None  # the domain pretrained on; None = the domain with most training rows
    finetune_epochs: int = Field(default=3, ge=1)  # epochs on the other domains' rows after pretraining
    finetune_lr: float | None = Field(default=None, gt=0)  # None = the training learning rate
    # Which model scores the source domain. "pretrained": the model before fine-tuning, the one
    # fitted on the source's own rows (fine-tuning on the targets only moves it away from
    # them); "finetuned": the fine-tuned model scores every domain (crossctr before 0.2).
    source_model: Literal["pretrained", "finetuned"] = "pretrained"


StrategyConfig = Annotated[
    JointStrategy | SelfTrainStrategy | SrcOnlyStrategy | FineTuneStrategy, Field(discriminator="name")
]


@dataclass
class StrategyResult:
    members: dict[str, nn.Module]
    route: dict[str, str]  # domain name -> member name
    fits: dict[str, FitResult] = field(default_factory=dict)


def seeded(factory: ModelFactory, seed: int) -> nn.Module:
    """Build a model with its initial weights drawn from `seed`, not from the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def _source(name: str | None, train: EncodedSplit, domains: list[str]) -> int:
    if name is None:
        counts = train.domain_counts(len(domains))
        return int(max(range(len(domains)), key=lambda k: counts[k]))
    if name not in domains:
        raise ConfigError(f"strategy.source {name!r} is not a domain; domains: {domains}")
    return domains.index(name)


def run_strategy(
    strategy: Any, factory: ModelFactory, train: EncodedSplit, valid: EncodedSplit, trainer: Trainer
) -> StrategyResult:
    domains, seed = trainer.domain_names, trainer.config.seed
    if isinstance(strategy, JointStrategy):
        model = seeded(factory, seed)
        fit = trainer.fit(model, train, valid, desc="joint", key="joint")
        return StrategyResult({"joint": model}, {d: "joint" for d in domains}, {"joint": fit})

    if isinstance(strategy, SelfTrainStrategy):
        result = StrategyResult({}, {})
        for k, name in enumerate(domains):
            model = seeded(factory, seed + k)
            result.fits[name] = trainer.fit(
                model, train.only_domains([k]), valid.only_domains([k]), desc=f"self-train {name}", key=name
            )
            result.members[name], result.route[name] = model, name
        return result

    if isinstance(strategy, SrcOnlyStrategy):
        src = _source(strategy.source, train, domains)
        model = seeded(factory, seed)
        # Validation on the source only: the other domains are unseen by design.
        fit = trainer.fit(
            model, train.only_domains([src]), valid.only_domains([src]), desc=f"src-only {domains[src]}", key="source"
        )
        return StrategyResult({"source": model}, {d: "source" for d in domains}, {"source": fit})

    if isinstance(strategy, FineTuneStrategy):
        src = _source(strategy.source, train, domains)
        targets = [k for k in range(len(domains)) if k != src]
        model = seeded(factory, seed)
        pre = trainer.fit(
            model,
            train.only_domains([src]),
            valid.only_domains([src]),
            desc=f"finetune: pretrain {domains[src]}",
            key="pretrain",
        )
        keep = strategy.source_model == "pretrained"
        tuned = copy.deepcopy(model) if keep else model
        tune_cfg = trainer.config.model_copy(
            update={"epochs": strategy.finetune_epochs, "lr": strategy.finetune_lr or trainer.config.lr}
        )
        post = trainer.with_config(tune_cfg).fit(
            tuned, train.only_domains(targets), valid.only_domains(targets), desc="finetune: targets", key="finetune"
        )
        members = {"pretrained": model, "finetuned": tuned} if keep else {"finetuned": tuned}
        route = {d: "pretrained" if keep and k == src else "finetuned" for k, d in enumerate(domains)}
        why = "strategy.source" if strategy.source else "the most training rows"
        log.info(
            "finetune: source %s (%s), scored by the %s model; %s scored by the fine-tuned model",
            domains[src],
            why,
            strategy.source_model,
            ", ".join(domains[k] for k in targets),
        )
        return StrategyResult(members, route, {"pretrain": pre, "finetune": post})

    raise ConfigError(f"unknown strategy {strategy!r}")
