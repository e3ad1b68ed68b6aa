"""A training run from config to a self-contained run folder.

The folder's files and how they are written and read back: crossctr.inference.runfolder;
loading it to score rows: crossctr.inference.Predictor (no training code).

Under torchrun every rank trains; rank 0 alone evaluates and writes the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

import crossctr
from crossctr.data.dataset import EncodedSplit, PreparedData
from crossctr.data.encoders import FeatureEncoder
from crossctr.data.prepare import load_dataset
from crossctr.evaluation.metrics import domain_metrics
from crossctr.evaluation.split import write_split_record
from crossctr.files import DiskFullError, disk_full
from crossctr.inference.runfolder import write_run_folder
from crossctr.inference.score import route_scores
from crossctr.models import ModelConfig, build_model
from crossctr.schema import ConfigError, DatasetSchema, StrictModel, load_yaml_model
from crossctr.training.checkpoint import Checkpointer, CheckpointError
from crossctr.training.config import TrainConfig
from crossctr.training.distributed import DistInfo
from crossctr.training.strategies import JointStrategy, StrategyConfig, StrategyResult, run_strategy
from crossctr.training.tracking import make_tracker
from crossctr.training.trainer import Trainer

__all__ = [
    "RunConfig",
    "RunResult",
    "train_run",
    "check_out_folder",
    "restrict_domains",
    "evaluate_members",
    "task_metrics",
]

log = logging.getLogger(__name__)


class RunConfig(StrictModel):
    dataset: str  # dataset YAML, relative to the run config's folder unless absolute
    model: ModelConfig = Field(default_factory=lambda: {"name": "cnan"}, validate_default=True)
    strategy: StrategyConfig = Field(default_factory=JointStrategy)
    train: TrainConfig = Field(default_factory=TrainConfig)
    domains: tuple[str, ...] | None = None  # train and evaluate on these domains only (a scenario)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        cfg = load_yaml_model(cls, path)
        ds = Path(cfg.dataset)
        if not ds.is_absolute():
            cfg = cfg.model_copy(update={"dataset": str(Path(path).parent / ds)})
        return cfg


def restrict_domains(data: PreparedData, names: tuple[str, ...]) -> PreparedData:
    """Keep the rows of `names` only and renumber their domain ids 0..len(names)-1."""
    allv = list(data.schema.domain.values)
    unknown = [n for n in names if n not in allv]
    if unknown or len(names) < 2:
        raise ConfigError(f"domains {list(names)}: need at least 2 of the dataset's domains {allv}; unknown: {unknown}")
    schema = data.schema.model_copy(update={"domain": data.schema.domain.model_copy(update={"values": tuple(names)})})
    lookup = torch.full((len(allv),), -1, dtype=torch.int64)
    for new, name in enumerate(names):
        lookup[allv.index(name)] = new
    splits = {}
    for key, split in data.splits.items():
        sub = split.only_domains([allv.index(n) for n in names])
        splits[key] = EncodedSplit(sub.features, lookup[sub.domain], sub.label, sub.tasks)
    encoder = FeatureEncoder(schema)
    encoder.encoders_ = data.encoder.encoders_
    return PreparedData(schema, encoder, splits)


def task_metrics(
    data: EncodedSplit, task_prob: np.ndarray | None, task_names: list[str], names: list[str]
) -> dict[str, Any]:
    """{task: per-domain metrics} over the rows that carry each extra label."""
    if task_prob is None or data.tasks is None:
        return {}
    labels, dom = data.tasks.numpy(), data.domain.numpy()
    out = {}
    for t, task in enumerate(task_names):
        has = ~np.isnan(labels[:, t])
        out[task] = domain_metrics(labels[has, t], task_prob[has, t], dom[has], names)
    return out


def evaluate_members(
    result: StrategyResult,
    data: EncodedSplit,
    names: list[str],
    batch_size: int,
    device: Any,
    task_names: list[str] | None = None,
) -> tuple[dict, dict[str, np.ndarray], dict[str, Any]]:
    """Click metrics per domain, attention, and per-task per-domain metrics (multi-task)."""
    prob, attention, tasks = route_scores(result.members, result.route, data, names, batch_size, device)
    return (
        domain_metrics(data.label.numpy(), prob, data.domain.numpy(), names),
        attention,
        task_metrics(data, tasks, task_names or [], names),
    )


@dataclass
class RunResult:
    out: Path
    metrics: dict[str, Any]
    attention: dict[str, Any]
    result: StrategyResult


def _group_attention(att: dict[str, np.ndarray], schema: DatasetSchema) -> dict[str, Any]:
    groups = schema.groups
    feats = schema.feature_names
    gidx = np.array([groups.index(f.group) for f in schema.features])
    out: dict[str, Any] = {"features": feats, "groups": groups, "domains": list(schema.domain.values)}
    for key, a in att.items():  # a: (n_domains, F)
        by_group = np.stack([np.nanmean(a[:, gidx == g], axis=1) for g in range(len(groups))], axis=1)
        out[key] = {"per_feature": a, "per_group": by_group}
    return out


def _fingerprint(cfg: RunConfig, data: PreparedData) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed: the config (less settings that change no
    result or may differ on restart) and the data's size per split and domain. Renamed settings
    keep their former keys (by_alias), so a run started before a rename still resumes."""
    run = cfg.model_dump(
        mode="json",
        by_alias=True,
        exclude={
            "dataset": True,
            "train": {
                "device",
                "threads",
                "progress",
                "eval_batch_size",
                "checkpoint_every",
                "deterministic",
                "tensorboard",
            },
        },
    )
    rows = {k: s.domain_counts(len(data.schema.domain.values)) for k, s in data.splits.items()}
    return {"run": run, "rows": rows}


def check_out_folder(out: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """`crossctr train --out`: a folder that already holds files is continued (`resume`) or
    replaced (`overwrite`), never silently: without either it is a ConfigError that says so."""
    out = Path(out)
    if resume and overwrite:
        raise ConfigError(
            f"{out}: --resume continues the run in the folder and --overwrite replaces it; pass one of them"
        )
    if resume or overwrite or not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        what = "a run" if (out / "config.json").is_file() or (out / "checkpoint").is_dir() else "files"
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(
            f"{out}: already holds {what} ({shown}); pass --resume to continue its checkpoint, --overwrite to train "
            "a new run in its place, or choose another --out (nothing was changed)"
        )


def _has_files(folder: Path) -> bool:
    return any(files for _, _, files in os.walk(folder))


def train_run(cfg: RunConfig, out: str | Path, data: PreparedData | None = None, *, resume: bool = False) -> RunResult:
    """Read data (unless given), train with the strategy, evaluate, write the run folder.

    `resume` continues from the folder's checkpoint/ (after a crash; same config and data).
    Under torchrun all ranks call this; rank 0 alone writes, the others return empty metrics.
    A run that fails before writing anything removes the folder it created (no empty `out`);
    a disk that fills while the run folder is written is a DiskFullError naming the folder
    (the checkpoint of the finished training stays, for `resume`).
    """
    out = Path(out)
    created = not out.exists()
    try:
        return _train_run(cfg, out, data, resume)
    except BaseException as err:
        if created and DistInfo.current().is_main and out.is_dir() and not _has_files(out):
            shutil.rmtree(out, ignore_errors=True)  # only empty folders of this run's making
        if disk_full(err) and not isinstance(err, DiskFullError | CheckpointError):
            raise DiskFullError(
                f"{out}: the disk filled while the run folder was written ({err}); free space, then run again with "
                f"--resume: the finished training in {out / 'checkpoint'} is reused"
            ) from err
        raise


def _train_run(cfg: RunConfig, out: Path, data: PreparedData | None, resume: bool) -> RunResult:
    info = DistInfo.current()
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    model_cfg = cfg.model
    if data is None:
        ds_path = Path(cfg.dataset)
        data = load_dataset(
            ds_path
        )  # a prepared folder (crossctr prepare) is memory-mapped; a dataset YAML is read in memory
    if cfg.domains is not None:
        data = restrict_domains(data, cfg.domains)
    n_tasks = getattr(model_cfg, "tasks", None)
    if n_tasks is not None and n_tasks != len(data.schema.task_names):
        raise ConfigError(
            f"model: tasks: {n_tasks} extra-task heads, but dataset {data.schema.name!r} declares "
            f"{len(data.schema.task_names)} task column(s) {data.schema.task_names}; set model tasks to that number "
            "or list the label columns under `tasks:` in the dataset YAML"
        )
    names = list(data.schema.domain.values)
    ckpt = Checkpointer(out / "checkpoint", _fingerprint(cfg, data), write=info.is_main)
    if resume:
        ckpt.load()
    else:
        ckpt.reset()
    if info.world > 1:
        torch.distributed.barrier()  # every rank has read the checkpoint before rank 0 replaces it
    tracker = make_tracker(cfg.train.tensorboard, out) if info.is_main else None  # train.tensorboard
    trainer = Trainer(cfg.train, names, checkpoint=ckpt, tracker=tracker)
    cards = data.encoder.cardinalities

    def factory() -> torch.nn.Module:
        return build_model(model_cfg, cards, len(names))

    try:
        result = run_strategy(cfg.strategy, factory, data.train, data.valid, trainer)
    finally:
        if tracker is not None:
            tracker.close()
    if not info.is_main:
        return RunResult(out, {}, {}, result)

    tasks = data.schema.task_names
    valid, _, valid_tasks = evaluate_members(
        result, data.valid, names, cfg.train.eval_batch_size, trainer.device, tasks
    )
    test, att, test_tasks = evaluate_members(result, data.test, names, cfg.train.eval_batch_size, trainer.device, tasks)
    metrics = {
        "valid": valid,
        "test": test,
        "fit_seconds": {k: f.seconds for k, f in result.fits.items()},
        "best_epoch": {k: f.best_epoch for k, f in result.fits.items()},
    }
    if valid_tasks:
        metrics["tasks"] = {t: {"valid": valid_tasks[t], "test": test_tasks[t]} for t in valid_tasks}
    attention = _group_attention(att, data.schema)

    config = {
        "crossctr_version": crossctr.__version__,
        "run": cfg.model_dump(mode="json"),
        "model": model_cfg.model_dump(mode="json"),
        "cardinalities": cards,
        "domains": names,
        "members": list(result.members),
        "route": result.route,
    }
    history = {k: f.history for k, f in result.fits.items()}
    write_run_folder(
        out, data.encoder, result.members, config, {"metrics": metrics, "history": history, "attention": attention}
    )
    write_split_record(out, data)  # lets `crossctr evaluate --data` and `crossctr split` find the test rows
    return RunResult(out, metrics, attention, result)
