"""Typed, validated training configuration; a misspelt key is an error, not a silent default."""

from __future__ import annotations

import functools
import os
from typing import Literal

from pydantic import Field

from crossctr.schema import StrictModel

__all__ = ["TrainConfig", "DEFAULT_LOSS_WEIGHTS", "ROWWISE_ADAGRAD_LR", "default_threads"]

# λ's are not in the paper (docs/design.md: pick by validation and record). These are the
# trainer's weights on the model's named auxiliary losses, i.e. λ1/2 for "adv", λ2/2 for
# "domain"; "disc" (discriminator) and "critic" (Wasserstein critics) are those
# networks' own terms and only move them.
DEFAULT_LOSS_WEIGHTS = {"adv": 0.05, "domain": 0.05, "disc": 1.0, "critic": 1.0}
# Default step size of row-wise Adagrad on the tables (Adagrad's steps shrink as 1/√t, so it
# starts larger than Adam's 1e-3); from a sweep of 0.01, 0.03 and 0.1 on the speed benchmark's data
# (benchmarks/README.md).
ROWWISE_ADAGRAD_LR = 0.01


@functools.cache
def default_threads() -> int:
    """Intra-op threads for `threads: None`: the CPUs this process may run on, less the whole
    cores other work keeps busy (the 1-minute load average) when the process starts training; at least 1.

    Several jobs on one machine then split the cores instead of each starting one thread per
    core (threads that share a core wait for each other at every barrier). Chosen once per process,
    so every fit of a run uses the same count (results do not depend on the load of the moment).
    OpenMP threads should also wait passively (OMP_WAIT_POLICY=PASSIVE, set before torch is
    imported; the `crossctr` command sets it): spinning threads slow the other jobs down too.
    """
    try:
        cpus = len(os.sched_getaffinity(0))  # a container or taskset may allow fewer than cpu_count
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0])
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(cpus, cpus - busy))


class TrainConfig(StrictModel):
    # An upper bound, not a schedule: early stopping ends the fit and restores the best epoch.
    # On ML-1M every model of the calibration grid peaked at epoch 5 or 6 (docs/results/README.md),
    # past the old default of 5; 20 leaves room for slower learners at the cost of `patience` epochs.
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    lr: float = Field(default=1e-3, gt=0)  # paper §3: Adam, learning rate 0.001
    weight_decay: float = Field(default=0.0, ge=0)  # λ4 of the paper's loss, as L2 weight decay
    patience: int = Field(default=3, ge=1)  # epochs without a better validation AUC (select_on) before stopping
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # torch intra-op threads; None (or 0): `default_threads()`, the CPUs available less those busy at the start
    threads: int | None = None
    # "equal": Σ_d mean BCE of domain d (paper's Loss_d, each domain weighs the same);
    # "rows": one mean over all rows (a big domain dominates); "power": domain d weighs
    # ∝ n_d^weighting_power (n_d its training rows), between the two (power 0 ~ equal, 1 = rows).
    # Default "rows": the best mean of the domains' validation AUCs on ML-1M rich-poor and on the
    # simulator (experiments/weighting.yaml, docs/results/README.md); the paper's "equal" helps
    # only the smallest simulator domain and costs the others more. Paper experiments pin "equal".
    domain_weighting: Literal["equal", "rows", "power"] = "rows"
    # α of "power": a domain's weight ∝ n_d^α; None: 0.5. (Optional settings default to None
    # where None keeps the old behaviour, so experiment records made before they existed stay valid.)
    weighting_power: float | None = Field(default=None, ge=0.0, le=1.0)
    # Early stopping and best-weight selection on the mean of the domains' validation AUCs
    # (every domain counts the same) or on the AUC of all validation rows pooled.
    select_on: Literal["domain_mean", "overall"] | None = None  # None: "domain_mean"
    loss_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    # Weight of the extra-task losses of a multi-task model (same per-domain form as the click
    # loss, over the rows that carry that label); None: 1.0, each task weighs like the click.
    task_weight: float | None = Field(default=None, ge=0)
    fused_adam: bool = True  # same maths as torch's default Adam, fewer kernel launches
    # Optimizer of the embedding tables. None / "adam": SparseAdam on tables built with
    # `sparse_embeddings` (two moment tensors of the table's size), the dense Adam otherwise.
    # "rowwise_adagrad": every table gets row-wise Adagrad (training.optim), one float of state
    # per row and a cheaper step, so a far larger vocabulary fits; another optimiser, with its
    # own step size `sparse_lr`.
    sparse_optimizer: Literal["adam", "rowwise_adagrad"] | None = None
    # Step size of the table optimizer; None: `lr` for Adam, ROWWISE_ADAGRAD_LR for row-wise Adagrad.
    sparse_lr: float | None = Field(default=None, gt=0)
    # Matmul precision of the training forward/backward. "bf16": autocast to bfloat16 (fp32
    # weights, optimizer and losses), on GPUs and on CPUs with AVX512-BF16/AMX, where matmuls
    # run several times faster; validation and scoring stay fp32. None: fp32.
    precision: Literal["fp32", "bf16"] | None = None
    eval_batch_size: int = Field(default=8192, ge=1)
    progress: bool = True
    # Steps between mid-epoch checkpoints in a run folder's checkpoint/ (0 = only at epoch
    # ends): what a crash can cost, against one write of model + optimizer state per save.
    checkpoint_every: int = Field(default=0, ge=0)
    # torch.use_deterministic_algorithms(True) for the whole process: with fixed `threads`, a
    # resumed CPU run ends bit-identical to an uninterrupted one. Off by default: some CUDA
    # kernels have no deterministic form and then raise.
    deterministic: bool = False
    # TensorBoard logging (the `tensorboard` extra): loss terms per step, per-domain validation
    # AUC and log loss per epoch. true: RUN/tensorboard; a path: that folder; None: off.
    tensorboard: bool | str | None = None
