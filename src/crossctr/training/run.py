"""A training run from config to a self-contained run folder, and the predictor that loads it.

Run folder (everything a predictor needs, nothing pickled):
    config.json          run config, model config, cardinalities, members and routing, version
    encoders.json        fitted vocabularies and buckets, with the dataset schema
    weights.safetensors  every member's weights, keys prefixed "<member>."
    metrics.json         per-domain validation and test AUC / log loss (and per task, multi-task)
    history.json         per-epoch losses and validation metrics
    attention.json       mean attention weight per feature and per feature group, per domain
    split.json           rows per split and domain, digests of the encoded splits (evaluation.split)
    checkpoint/          training state for `--resume` after a crash (see training.checkpoint)

Under torchrun every rank trains; rank 0 alone evaluates and writes the folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

import crossctr
from crossctr.data.dataset import EncodedSplit, PreparedData, prepare
from crossctr.data.encoders import FeatureEncoder
from crossctr.data.io import DataError, validate_table
from crossctr.data.prepare import load_dataset
from crossctr.evaluation.metrics import domain_metrics
from crossctr.evaluation.predict import score
from crossctr.evaluation.split import write_split_record
from crossctr.files import DiskFullError, check_space, disk_full, set_new_file_mode
from crossctr.jsonsafe import finite, json_default
from crossctr.models import build_model, parse_model_config
from crossctr.schema import ConfigError, DatasetSchema, StrictModel, load_yaml_model
from crossctr.training.checkpoint import CheckpointError, Checkpointer
from crossctr.training.checkpoint import atomic_write_bytes as atomic_write
from crossctr.training.config import TrainConfig
from crossctr.training.distributed import DistInfo
from crossctr.training.strategies import JointStrategy, StrategyConfig, StrategyResult, run_strategy
from crossctr.training.tracking import make_tracker
from crossctr.training.trainer import Trainer

__all__ = ["RunConfig", "RunResult", "train_run", "check_out_folder", "Predictor", "load_encoder", "restrict_domains", "atomic_write", "evaluate_members", "route_scores", "task_metrics"]

log = logging.getLogger(__name__)


class RunConfig(StrictModel):
    dataset: str  # dataset YAML, relative to the run config's folder unless absolute
    model: dict[str, Any] = Field(default_factory=lambda: {"name": "cnan"})
    strategy: StrategyConfig = Field(default_factory=JointStrategy)
    train: TrainConfig = Field(default_factory=TrainConfig)
    domains: tuple[str, ...] | None = None  # train and evaluate on these domains only (a scenario)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        cfg = load_yaml_model(cls, path)
        parse_model_config(cfg.model, f"{path}: model")  # fail now, not after reading data
        ds = Path(cfg.dataset)
        if not ds.is_absolute():
            cfg = cfg.model_copy(update={"dataset": str(Path(path).parent / ds)})
        return cfg


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=json_default, allow_nan=False).encode())


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


def route_scores(members: dict[str, nn.Module], route: dict[str, str], data: EncodedSplit, names: list[str], batch_size: int = 8192, device: Any = "cpu") -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """Score each domain's rows with the member its route names.

    Returns click probabilities (N,), attention (n_domains, F) per key, and the extra-task
    probabilities (N, T) of multi-task members (None when the members have no task heads).
    """
    prob = np.zeros(len(data), dtype=np.float64)
    tasks: np.ndarray | None = None
    attention: dict[str, np.ndarray] = {}
    dom = data.domain.numpy()
    for member, model in members.items():
        ks = [k for k, n in enumerate(names) if route[n] == member]
        rows = np.flatnonzero(np.isin(dom, ks))
        if len(rows) == 0:
            continue
        s = score(model, data.select(torch.from_numpy(rows)), len(names), batch_size, device)
        prob[rows] = s.prob
        if s.tasks is not None:
            if tasks is None:
                tasks = np.full((len(data), s.tasks.shape[1]), np.nan)
            tasks[rows] = s.tasks
        for key, att in s.attention.items():
            acc = attention.setdefault(key, np.full_like(att, np.nan))
            acc[ks] = att[ks]
    return prob, attention, tasks


def task_metrics(data: EncodedSplit, task_prob: np.ndarray | None, task_names: list[str], names: list[str]) -> dict[str, Any]:
    """{task: per-domain metrics} over the rows that carry each extra label."""
    if task_prob is None or data.tasks is None:
        return {}
    labels, dom = data.tasks.numpy(), data.domain.numpy()
    out = {}
    for t, task in enumerate(task_names):
        has = ~np.isnan(labels[:, t])
        out[task] = domain_metrics(labels[has, t], task_prob[has, t], dom[has], names)
    return out


def evaluate_members(result: StrategyResult, data: EncodedSplit, names: list[str], batch_size: int, device: Any, task_names: list[str] | None = None) -> tuple[dict, dict[str, np.ndarray], dict[str, Any]]:
    """Click metrics per domain, attention, and per-task per-domain metrics (multi-task)."""
    prob, attention, tasks = route_scores(result.members, result.route, data, names, batch_size, device)
    return domain_metrics(data.label.numpy(), prob, data.domain.numpy(), names), attention, task_metrics(data, tasks, task_names or [], names)


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
    result or may differ on restart) and the data's size per split and domain."""
    run = cfg.model_dump(mode="json", exclude={"dataset": True, "train": {"device", "threads", "progress", "eval_batch_size", "checkpoint_every", "deterministic", "tensorboard"}})
    rows = {k: s.domain_counts(len(data.schema.domain.values)) for k, s in data.splits.items()}
    return {"run": run, "rows": rows}


def check_out_folder(out: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """`crossctr train --out`: a folder that already holds files is continued (`resume`) or
    replaced (`overwrite`), never silently: without either it is a ConfigError that says so."""
    out = Path(out)
    if resume and overwrite:
        raise ConfigError(f"{out}: --resume continues the run in the folder and --overwrite replaces it; pass one of them")
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
        if disk_full(err) and not isinstance(err, (DiskFullError, CheckpointError)):
            raise DiskFullError(f"{out}: the disk filled while the run folder was written ({err}); free space, then run again with --resume: the finished training in {out / 'checkpoint'} is reused") from err
        raise


def _train_run(cfg: RunConfig, out: Path, data: PreparedData | None, resume: bool) -> RunResult:
    info = DistInfo.current()
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    model_cfg = parse_model_config(cfg.model)
    if data is None:
        ds_path = Path(cfg.dataset)
        data = load_dataset(ds_path)  # a prepared folder (crossctr prepare) is memory-mapped; a dataset YAML is read in memory
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
    factory = lambda: build_model(model_cfg, cards, len(names))  # noqa: E731
    try:
        result = run_strategy(cfg.strategy, factory, data.train, data.valid, trainer)
    finally:
        if tracker is not None:
            tracker.close()
    if not info.is_main:
        return RunResult(out, {}, {}, result)

    tasks = data.schema.task_names
    valid, _, valid_tasks = evaluate_members(result, data.valid, names, cfg.train.eval_batch_size, trainer.device, tasks)
    test, att, test_tasks = evaluate_members(result, data.test, names, cfg.train.eval_batch_size, trainer.device, tasks)
    metrics = {"valid": valid, "test": test, "fit_seconds": {k: f.seconds for k, f in result.fits.items()}, "best_epoch": {k: f.best_epoch for k, f in result.fits.items()}}
    if valid_tasks:
        metrics["tasks"] = {t: {"valid": valid_tasks[t], "test": test_tasks[t]} for t in valid_tasks}
    attention = _group_attention(att, data.schema)

    data.encoder.save(out / "encoders.json")
    state = {f"{m}.{k}": v.detach().cpu().contiguous() for m, model in result.members.items() for k, v in model.state_dict().items()}
    check_space(out, sum(v.numel() * v.element_size() for v in state.values()), "the run's weights")
    tmp = out / ".weights.safetensors.tmp"
    try:
        save_file(state, str(tmp), metadata={"format": "crossctr"})
        set_new_file_mode(tmp)  # safetensors writes 0600; every file of the folder follows the umask
        os.replace(tmp, out / "weights.safetensors")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_json(out / "config.json", {
        "crossctr_version": crossctr.__version__,
        "run": cfg.model_dump(mode="json"),
        "model": model_cfg.model_dump(mode="json"),
        "cardinalities": cards,
        "domains": names,
        "members": list(result.members),
        "route": result.route,
    })
    _write_json(out / "metrics.json", finite(metrics))
    _write_json(out / "history.json", finite({k: f.history for k, f in result.fits.items()}))
    _write_json(out / "attention.json", finite(attention))
    write_split_record(out, data)  # lets `crossctr evaluate --data` and `crossctr split` find the test rows
    return RunResult(out, metrics, attention, result)


_DAMAGED = "the run folder is damaged or was edited: train again, or restore the folder from a copy"


def load_encoder(path: Path) -> FeatureEncoder:
    """A run or export folder's encoders.json; a damaged file is a ConfigError naming it."""
    try:
        return FeatureEncoder.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; {_DAMAGED}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:  # not JSON, or not what `save` writes
        raise ConfigError(f"{path}: cannot be read as fitted encoders ({type(err).__name__}: {err}); {_DAMAGED}") from None


def _check_config(config: Any, encoder: FeatureEncoder, source: str) -> Any:
    """config.json's keys a predictor relies on, checked once; returns the parsed model config."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: holds a JSON {type(config).__name__}, not an object; {_DAMAGED}")
    missing = [k for k in ("model", "cardinalities", "domains", "members", "route") if k not in config]
    if missing:
        raise ConfigError(f"{source}: missing key(s) {missing}; {_DAMAGED}")
    model_cfg = parse_model_config(config["model"], f"{source}: model")
    domains, members, route = config["domains"], config["members"], config["route"]
    if domains != list(encoder.schema.domain.values):
        raise ConfigError(f"{source}: domains {domains!r} differ from encoders.json's {list(encoder.schema.domain.values)}; {_DAMAGED}")
    if not (isinstance(members, list) and members and all(isinstance(m, str) for m in members)):
        raise ConfigError(f"{source}: members must be a non-empty list of names, got {members!r}; {_DAMAGED}")
    if not (isinstance(route, dict) and set(route) == set(domains) and set(route.values()) <= set(members)):
        raise ConfigError(f"{source}: route {route!r} must send each domain {domains} to one of the members {members}; {_DAMAGED}")
    cards = config["cardinalities"]
    if not (isinstance(cards, list) and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in cards)):
        raise ConfigError(f"{source}: cardinalities must be a list of positive integers, got {cards!r}; {_DAMAGED}")
    return model_cfg


class Predictor:
    """Scores raw rows with a run folder: no training code, no unpickling."""

    def __init__(self, encoder: FeatureEncoder, members: dict[str, nn.Module], route: dict[str, str], config: dict[str, Any]) -> None:
        self.encoder, self.members, self.route, self.config = encoder, members, route, config
        # the extra labels the model scores: empty unless it was trained with `tasks`
        self.task_names = encoder.schema.task_names if getattr(parse_model_config(config["model"]), "tasks", None) else []
        self.domains = list(encoder.schema.domain.values)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> "Predictor":
        """Read a run folder; a missing, damaged or edited file is a ConfigError naming it (no traceback)."""
        run_dir = Path(run_dir)
        for name in ("config.json", "encoders.json", "weights.safetensors"):
            if not (run_dir / name).is_file():
                raise ConfigError(f"{run_dir}: not a run folder (missing {name})")
        source = str(run_dir / "config.json")
        try:
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:  # ValueError: not UTF-8, not JSON
            raise ConfigError(f"{source}: cannot be read as JSON ({err}); {_DAMAGED}") from None
        encoder = load_encoder(run_dir / "encoders.json")
        model_cfg = _check_config(config, encoder, source)
        wpath = run_dir / "weights.safetensors"
        try:
            weights = load_file(str(wpath), device=device)
        except Exception as err:  # SafetensorError (truncated, empty, not safetensors) derives from Exception only
            raise ConfigError(f"{wpath}: cannot be read as safetensors ({err}; {wpath.stat().st_size} bytes); {_DAMAGED}") from None
        members = {}
        for m in config["members"]:
            prefix = f"{m}."
            try:
                model = build_model(model_cfg, config["cardinalities"], len(config["domains"]))
                model.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
            except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as err:  # a model config or member that the weights do not fit
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ConfigError(f"{source}: member {m!r} does not match {wpath.name} ({first}); {_DAMAGED}") from None
            members[m] = model.to(device).eval()
        return cls(encoder, members, config["route"], config)

    def encode(self, table: pa.Table, source: str = "input") -> EncodedSplit:
        schema = self.encoder.schema
        needed = [schema.domain.column, *schema.raw_feature_columns()]
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise DataError(f"{source}: missing column(s) {missing}; the model needs {needed}")
        has_label = schema.label in table.column_names
        if not has_label:
            table = table.append_column(schema.label, pa.array(np.zeros(table.num_rows, dtype=np.int8)))
        valid = validate_table(table.select([schema.label, *needed]), schema, source, scoring=True)
        y = valid.column(schema.label).to_numpy(zero_copy_only=False).astype(np.float32)
        return EncodedSplit.from_numpy(self.encoder.transform(valid), self.encoder.domain_ids(valid), y)

    def predict_encoded(self, data: EncodedSplit, batch_size: int = 8192) -> np.ndarray:
        return route_scores(self.members, self.route, data, self.domains, batch_size)[0]  # click only

    def predict_encoded_all(self, data: EncodedSplit, batch_size: int = 8192) -> dict[str, np.ndarray]:
        """Click probabilities and, for a multi-task model, each extra label's: {"click": (N,), task: (N,)}."""
        prob, _, tasks = route_scores(self.members, self.route, data, self.domains, batch_size)
        out = {"click": prob}
        if tasks is not None:
            out.update({t: tasks[:, k] for k, t in enumerate(self.task_names)})
        return out

    def predict(self, table: pa.Table, source: str = "input") -> np.ndarray:
        """Click probabilities for raw rows (a label column, if present, is ignored)."""
        return self.predict_encoded(self.encode(table, source))
