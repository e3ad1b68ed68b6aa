"""The training loss: per-domain weighting of row losses, its data-parallel form, and the objective.

Below models and training: the trainer's `Objective` and a model's own per-domain auxiliary
terms (CNAN's L_d) weigh rows with the same helpers; serving never imports it.

Per-domain weighting of row losses v_i (BCE for the click), `Weighting`:

    equal   Σ_d mean_{i in d} v_i                    paper §2.2: every domain weighs the same
    rows    mean_i v_i                               a big domain dominates
    power   mean_i s_{d_i} v_i                       domain d weighs ∝ n_d^α (n_d its training
                                                     rows, s = `power_row_scale`)

The click loss is ½ of that over the click BCE (the paper's Σ_d Loss_d with ½ per domain); each
extra task's loss has the click loss's form over the rows that carry its label.

Data parallelism (see `crossctr.training.distributed`). A rank trains on a shard of B_r of the
global batch's B rows, its `Batch.shard` says what the global batch held, and DDP averages
gradients, g = (1/W) Σ_r ∇L_r. One rule makes g the one-process gradient: every term is
computed on the shard as a mean over the shard's rows (its "row-mean form"), and the objective
multiplies every term by W · B_r / B (`shard_share`). A plain row mean (rows, power, CNAN's
`adv` and `disc`) is already in that form; a per-domain mean divides by the global batch's rows
per domain and is multiplied by B / B_r (`per_domain_mean` with a shard). Exact for the click
loss, the extra tasks and every per-row or per-domain mean; the Wasserstein critics (distances
between whole sets) are per-rank estimates.

Example:
    >>> logits, label, domain = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0, 0, 1])
    >>> loss = click_loss(logits, label, domain, DomainWeights(2, "equal"))
    >>> round(float(loss), 4)
    0.3616
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from crossctr.data.batch import Batch, Shard
from crossctr.schema import ConfigError

__all__ = [
    "Weighting",
    "DEFAULT_POWER",
    "power_row_scale",
    "per_domain_mean",
    "DomainWeights",
    "click_loss",
    "task_counts",
    "task_loss",
    "shard_share",
    "Objective",
]

Weighting = Literal["equal", "rows", "power"]
DEFAULT_POWER = 0.5  # α of "power" when the config names none


def power_row_scale(domain_rows: torch.Tensor, power: float) -> torch.Tensor:
    """(N,) per-row factors that give domain d a total weight ∝ n_d^power in a row mean.

    A row of domain d gets (n_d / n)^(power - 1) / Σ_d' (n_d' / n)^power, so that the factors
    average 1 over the training rows: power 1 is the plain row mean, power 0 weighs every
    domain the same (the paper's form, divided by N).

    Example:
        >>> power_row_scale(torch.tensor([90.0, 10.0]), 1.0)
        tensor([1., 1.])
        >>> s = power_row_scale(torch.tensor([90.0, 10.0]), 0.0); (s * torch.tensor([0.9, 0.1])).tolist()
        [0.5, 0.5]
    """
    share = domain_rows.double() / domain_rows.sum()
    present = share > 0
    norm = (share[present] ** power).sum()
    scale = torch.where(present, share.clamp_min(1e-12) ** (power - 1.0) / norm, torch.zeros_like(share))
    return scale.float()


def per_domain_mean(
    values: torch.Tensor, domain: torch.Tensor, n_domains: int, shard: Shard | None = None
) -> torch.Tensor:
    """Mean of `values` (B,) over the rows of each domain -> (n_domains,); 0 where a domain has no rows.

    Summing the result gives Σ_d mean_{i in d} v_i: every domain weighs the same whatever its size.
    With a `shard`, the row-mean form of this shard's share of the global batch's means: sums
    divided by the global rows per domain, times B / B_r.

    Example:
        >>> per_domain_mean(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 2]), 3).tolist()
        [2.0, 0.0, 5.0]
    """
    values = values.float()  # sums in fp32 even under bf16 autocast
    sums = torch.zeros(n_domains, dtype=values.dtype, device=values.device).index_add(0, domain, values)
    if shard is None:
        counts = torch.bincount(domain, minlength=n_domains).to(values.dtype)
        return sums / counts.clamp_min(1)
    g = shard.domain_rows.to(device=values.device, dtype=values.dtype)
    return sums / g.clamp_min(1) * (shard.rows / max(values.shape[0], 1))


@dataclass(frozen=True)
class DomainWeights:
    """How a batch's row losses become one scalar: a `Weighting` over `n_domains` domains.

    `row_scale` (N,): the factors of "power" (`power_row_scale`); "power" without them (a
    trainer that has not seen its training rows, e.g. timing a step) is the equal form.

    Example:
        >>> DomainWeights(2).mean(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 1])).item()
        7.0
    """

    n_domains: int
    weighting: Weighting = "equal"
    row_scale: torch.Tensor | None = None

    def mean(self, values: torch.Tensor, domain: torch.Tensor, shard: Shard | None = None) -> torch.Tensor:
        """One scalar from row losses `values` (B,) of rows of `domain` (B,); with a `shard`, its row-mean form."""
        if self.row_scale is not None:
            return (values * self.row_scale.to(values.device, values.dtype)[domain]).mean()
        if self.weighting == "rows":
            return values.mean()
        return per_domain_mean(values, domain, self.n_domains, shard).sum()

    def to(self, device: torch.device | str) -> DomainWeights:
        return self if self.row_scale is None else replace(self, row_scale=self.row_scale.to(device))


def click_loss(
    logits: torch.Tensor, label: torch.Tensor, domain: torch.Tensor, weights: DomainWeights, shard: Shard | None = None
) -> torch.Tensor:
    """Σ_d ½·mean_{i in d} BCE(logit_i, y_i) (paper §2.2), or ½·mean over all rows for `weighting="rows"`.

    "power" multiplies each row's BCE by its domain's factor before the row mean (see
    `power_row_scale`). `shard`: the row-mean form (module docstring).
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), label, reduction="none")  # (B,)
    return 0.5 * weights.mean(bce, domain, shard)


def task_counts(tasks: torch.Tensor, domain: torch.Tensor, n_domains: int) -> torch.Tensor:
    """(T, N) rows of each domain that carry each extra label (NaN = no label)."""
    n_tasks = tasks.shape[1]
    has = ~torch.isnan(tasks)  # (B, T)
    flat = torch.arange(n_tasks, device=tasks.device) * n_domains + domain.unsqueeze(1)  # (B, T)
    return torch.bincount(flat[has], minlength=n_tasks * n_domains).view(n_tasks, n_domains)


def task_loss(
    logits: torch.Tensor, tasks: torch.Tensor, domain: torch.Tensor, weights: DomainWeights, shard: Shard | None = None
) -> torch.Tensor:
    """Σ_t of the click loss's form for each extra label, over the rows that carry it.

    logits, tasks: (B, T). "power" has no per-task factors: under it every task is a row mean
    ("rows"). With a `shard` (whose `task_rows` counts the global batch's labelled rows), the
    row-mean form.
    """
    has = ~torch.isnan(tasks)
    bce = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(tasks), reduction="none") * has  # (B, T)
    global_counts = None if shard is None else shard.task_rows
    counts = (task_counts(tasks, domain, weights.n_domains) if global_counts is None else global_counts).to(
        bce.device, bce.dtype
    )
    if weights.weighting in ("rows", "power"):
        loss = (0.5 * bce.sum(0) / counts.sum(1).clamp_min(1)).sum()
    else:
        per_row = counts.t()[domain]  # (B, T): labelled rows of the row's domain, per task
        loss = (0.5 * bce / per_row.clamp_min(1)).sum()
    if shard is None or global_counts is None:
        return loss
    return loss * (shard.rows / max(logits.shape[0], 1))  # a share of the global batch, as a row mean


def shard_share(batch: Batch) -> float:
    """W · B_r / B: what turns a term's row-mean form into this rank's part of DDP's average (1 without a shard)."""
    s = batch.shard
    return 1.0 if s is None else s.world * len(batch) / s.rows


class LossSettings(Protocol):
    """The training config's loss fields (`crossctr.training.config.TrainConfig` has them)."""

    @property
    def domain_weighting(self) -> Weighting: ...
    @property
    def weighting_power(self) -> float | None: ...
    @property
    def loss_weights(self) -> dict[str, float]: ...
    @property
    def task_weight(self) -> float | None: ...


class Output(Protocol):
    """What the objective reads of a model's output (`crossctr.models.ModelOutput`)."""

    @property
    def logits(self) -> torch.Tensor: ...
    @property
    def aux_losses(self) -> dict[str, torch.Tensor]: ...
    @property
    def task_logits(self) -> torch.Tensor | None: ...


class Objective:
    """A batch's training loss: click loss + task_weight · extra-task losses + Σ λ_name · auxiliary term.

    The one place the trainer (and anything that takes a training step) turns a model's output
    into a loss. Returns the total and its named terms (detached, each as the trainer logs it).

    Example:
        >>> obj = Objective(2, "equal", {"adv": 0.1})
        >>> class Out:
        ...     logits, task_logits, aux_losses = torch.zeros(2), None, {"adv": torch.tensor(1.0)}
        >>> total, terms = obj(Out(), Batch(torch.zeros(2, 1), torch.tensor([0, 1]), torch.tensor([0.0, 1.0])))
        >>> sorted(terms), round(float(total), 4)
        (['adv', 'click'], 0.7931)
    """

    def __init__(
        self,
        n_domains: int,
        weighting: Weighting = "rows",
        loss_weights: Mapping[str, float] | None = None,
        task_weight: float | None = None,
        row_scale: torch.Tensor | None = None,
    ) -> None:
        self.weights = DomainWeights(n_domains, weighting, row_scale)
        self.loss_weights = dict(loss_weights or {})
        self.task_weight = 1.0 if task_weight is None else task_weight  # each task weighs like the click by default

    @classmethod
    def from_config(cls, cfg: LossSettings, n_domains: int, train_domain: torch.Tensor | None = None) -> Objective:
        """The objective a config asks for; `train_domain` (n,): the training rows' domains, whose sizes "power" weighs
        by."""
        row_scale = None
        if cfg.domain_weighting == "power" and train_domain is not None:
            rows = torch.bincount(train_domain, minlength=n_domains)  # (N,) training rows per domain
            row_scale = power_row_scale(rows, DEFAULT_POWER if cfg.weighting_power is None else cfg.weighting_power)
        return cls(n_domains, cfg.domain_weighting, cfg.loss_weights, cfg.task_weight, row_scale)

    def to(self, device: torch.device | str) -> Objective:
        self.weights = self.weights.to(device)
        return self

    def __call__(self, out: Output, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        shard, share = batch.shard, shard_share(batch)
        total = click_loss(out.logits, batch.label, batch.domain, self.weights, shard)
        if shard is not None:
            total = total * share
        terms = {"click": total.detach()}
        if out.task_logits is not None:
            if batch.tasks is None:
                raise ConfigError(
                    "the model has extra-task heads (model `tasks`) but the dataset declares no `tasks` columns"
                )
            t_loss = task_loss(out.task_logits, batch.tasks, batch.domain, self.weights, shard)
            if shard is not None:
                t_loss = t_loss * share
            total = total + self.task_weight * t_loss
            terms["tasks"] = t_loss.detach()
        for name, value in out.aux_losses.items():
            if name not in self.loss_weights:
                raise ConfigError(
                    f"the model returns an auxiliary loss {name!r} with no weight; add it to "
                    f"train.loss_weights (now {sorted(self.loss_weights)})"
                )
            total = total + (self.loss_weights[name] * share) * value
            terms[name] = value.detach() * share
        return total, terms
