"""One fit loop for every model and strategy.

The trainer adds the click loss and the model's weighted named auxiliary losses, steps
Adam, validates every epoch, stops early on mean validation AUC over domains and keeps
the best weights. It never looks inside a model.

Under torchrun (see `distributed`) the same loop trains data-parallel: every rank draws the
same permutation, trains on its shard of each global batch with losses scaled so that DDP's
averaged gradient is the global-batch gradient, and validates on its chunk of the
validation rows, gathered so every rank computes the same metrics over all of them (and so
takes the same early-stopping decision).

With a `Checkpointer` the fit saves its whole state every `checkpoint_every` steps and at
each epoch end, and a restarted fit continues from it: the shuffle generator is saved as of
the epoch's start and the epoch's permutation is redrawn, the done batches skipped, so the
resumed run takes exactly the steps the uninterrupted one would have.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from crossctr.data.batch import Batch, Shard
from crossctr.data.dataset import EncodedSplit
from crossctr.evaluation.metrics import domain_metrics, mean_auc
from crossctr.inference.score import score
from crossctr.losses import Objective, task_counts
from crossctr.schema import ConfigError
from crossctr.training.checkpoint import Checkpointer, flatten_optimizer, restore_optimizer
from crossctr.training.config import ROWWISE_ADAGRAD_LR, TrainConfig, default_threads
from crossctr.training.distributed import DistInfo, any_rank, gather_rows, shard_mask, unwrap, wrap_ddp
from crossctr.training.optim import RowWiseAdagrad, optimizer_step
from crossctr.training.tracking import Tracker

__all__ = ["Trainer", "FitResult", "resolve_device", "make_optimizers"]

log = logging.getLogger(__name__)
_SELECT_NAME = {None: "mean", "domain_mean": "mean", "overall": "overall"}  # train.select_on, as the log says it


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return dev


def make_optimizers(model: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adam on dense parameters; the tables' own optimizer (`sparse_optimizer`) on the embedding tables.

    SparseAdam (row-wise, lazy) on tables built with sparse gradients by default; with
    `sparse_optimizer: rowwise_adagrad`, RowWiseAdagrad on every embedding table.
    """
    rowwise = cfg.sparse_optimizer == "rowwise_adagrad"
    table_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and (rowwise or m.sparse)}
    dense = [p for p in model.parameters() if id(p) not in table_ids]
    tables = [p for p in model.parameters() if id(p) in table_ids]
    # Fused Adam: one kernel over all parameters instead of a Python loop of small ops,
    # the same update rule (about 1.5x faster per step for these models on CPU).
    fused = cfg.fused_adam and all(p.dtype.is_floating_point for p in dense)
    opts: list[torch.optim.Optimizer] = [
        torch.optim.Adam(dense, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    ]
    if tables and rowwise:
        opts.append(RowWiseAdagrad(tables, lr=cfg.sparse_lr or ROWWISE_ADAGRAD_LR))
    elif tables:
        opts.append(torch.optim.SparseAdam(tables, lr=cfg.sparse_lr or cfg.lr))
    return opts


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, dict[str, float]]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _FitState:
    """Where a fit stands between two optimizer steps, besides its tensors (the checkpoint's JSON)."""

    epoch: int = 1  # the epoch being run, 1-based
    step: int = 0  # batches of `epoch` already done
    global_step: int = 0  # optimizer steps over all epochs
    best_auc: float = -math.inf
    best_epoch: int = 0
    best_valid: dict[str, Any] = field(default_factory=dict)
    stale: int = 0  # epochs since the best one (early stopping)
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)  # this epoch's summed loss terms so far
    seconds: float = 0.0  # fit seconds spent before the latest (re)start
    epoch_seconds: float = 0.0  # training seconds of `epoch` spent before the latest (re)start


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        domain_names: list[str],
        checkpoint: Checkpointer | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.config = config
        self.tracker = tracker  # TensorBoard (training.tracking): loss per step, validation per epoch
        self.domain_names = list(domain_names)
        self.n_domains = len(domain_names)
        self.checkpoint = checkpoint
        self.dist = DistInfo.current()
        self.device = resolve_device(config.device)
        if self.dist.world > 1 and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", self.dist.local_rank)  # one GPU per rank
        torch.set_num_threads(config.threads or default_threads())  # None: the CPUs free at the start
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        self._objective = Objective.from_config(config, self.n_domains).to(
            self.device
        )  # `fit` adds the training rows ("power")

    def with_config(self, config: TrainConfig) -> Trainer:
        """A trainer for another stage of the same run (same domains and checkpoint)."""
        return Trainer(config, self.domain_names, self.checkpoint, self.tracker)

    def evaluate(self, model: nn.Module, data: EncodedSplit) -> dict[str, dict[str, float]]:
        """Metrics over all of `data`; under torchrun each rank scores a chunk and the scores are gathered."""
        model, info = unwrap(model), self.dist
        if info.world == 1:
            prob = score(model, data, self.n_domains, self.config.eval_batch_size, self.device).prob
        else:
            chunk = -(-len(data) // info.world)
            rows = torch.arange(info.rank * chunk, min(len(data), (info.rank + 1) * chunk))
            mine = score(model, data.select(rows), self.n_domains, self.config.eval_batch_size, self.device).prob
            prob = gather_rows(torch.from_numpy(mine), len(data), info, self.device).numpy()
        return domain_metrics(data.label.numpy(), prob, data.domain.numpy(), self.domain_names)

    def _loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its named terms (`crossctr.losses.Objective`; a data-parallel shard scaled by its
        `batch.shard`)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            out = model(batch)
        return self._objective(out, batch)

    def fit(
        self, model: nn.Module, train: EncodedSplit, valid: EncodedSplit, desc: str = "train", key: str | None = None
    ) -> FitResult:
        """Train `model` on `train`, validating on `valid` each epoch; returns with the best epoch's weights.

        `key` names this fit in the trainer's checkpoint (a strategy member or stage); without
        a key or a checkpointer the fit is not checkpointed.
        """
        cfg, info = self.config, self.dist
        ckpt = self.checkpoint if key is not None else None
        if ckpt is not None and key is not None:  # (a checkpointer is used only with a key)
            done = ckpt.finished_fit(key)
            if done is not None:
                model.load_state_dict(_strip(done.tensors, "model."))
                model.to(self.device)
                log.info(
                    "%s: finished before the restart (best epoch %d), not trained again",
                    desc,
                    done.record["best_epoch"],
                )
                return FitResult(**done.record)
        model.to(self.device)
        self._objective = Objective.from_config(cfg, self.n_domains, train.domain).to(self.device)
        opts = make_optimizers(model, cfg)
        gen = torch.Generator().manual_seed(cfg.seed)  # batch order
        st, best_state = _FitState(), None
        # The global RNG (dropout, gradient-penalty mixes) is seeded for the fit and put back after it.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            saved = ckpt.progress(key) if ckpt is not None and key is not None else None
            if saved is not None:
                st, best_state = self._restore(saved, model, opts, gen)
                log.info("%s: resuming at epoch %d after step %d", desc, st.epoch, st.step)
            net = wrap_ddp(model, self.device, info)
            t0 = time.perf_counter()
            while st.epoch <= cfg.epochs:
                gen_epoch = gen.get_state()  # the state that redraws this epoch's permutation
                self._run_epoch(net, model, opts, gen, gen_epoch, train, st, desc, key, best_state, t0)
                valid_metrics = self.evaluate(model, valid)
                auc = valid_metrics["overall"]["auc"] if cfg.select_on == "overall" else mean_auc(valid_metrics)
                record = self._epoch_record(st, train, valid_metrics, auc, info)
                st.history.append(record)
                if self.tracker is not None and info.is_main:
                    self.tracker.log_epoch(key or desc, st.epoch, valid_metrics, auc)
                if info.is_main:
                    log.info(
                        "%s epoch %d: loss %.4f, valid %s AUC %.4f (%.0f rows/s)",
                        desc,
                        st.epoch,
                        record["train_loss"].get("click", float("nan")),
                        _SELECT_NAME[cfg.select_on],
                        auc,
                        record["train_rows_per_s"],
                    )
                stop = False
                if auc > st.best_auc or best_state is None:
                    st.best_auc, st.best_epoch, st.best_valid, st.stale = auc, st.epoch, valid_metrics, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    st.stale += 1
                    stop = st.stale >= cfg.patience
                    if (
                        stop and info.is_main and st.epoch < cfg.epochs
                    ):  # stopping after the last epoch is no early stop
                        log.info(
                            "%s: early stop after epoch %d (best epoch %d, %s AUC %.4f)",
                            desc,
                            st.epoch,
                            st.best_epoch,
                            _SELECT_NAME[cfg.select_on],
                            st.best_auc,
                        )
                st.epoch, st.step, st.sums, st.epoch_seconds = st.epoch + 1, 0, {}, 0.0
                if stop:
                    break
                if ckpt is not None and key is not None and st.epoch <= cfg.epochs:  # last epoch: finished fit
                    self._save(ckpt, key, model, opts, gen.get_state(), st, best_state, t0)
            st.seconds += time.perf_counter() - t0
        if best_state is not None:
            model.load_state_dict(best_state)
        result = FitResult(st.best_epoch, st.best_valid, st.history, st.seconds)
        if ckpt is not None and key is not None:
            ckpt.save_finished(key, {f"model.{k}": v for k, v in model.state_dict().items()}, asdict(result))
        return result

    def _run_epoch(
        self,
        net: nn.Module,
        model: nn.Module,
        opts: list[torch.optim.Optimizer],
        gen: torch.Generator,
        gen_epoch: torch.Tensor,
        train: EncodedSplit,
        st: _FitState,
        desc: str,
        key: str | None,
        best_state: dict | None,
        t0: float,
    ) -> None:
        """Batches st.step+1 .. n of epoch st.epoch; checkpoints every `checkpoint_every` steps."""
        cfg, info = self.config, self.dist
        ckpt = self.checkpoint if key is not None else None
        model.train()
        n, bs = len(train), cfg.batch_size
        n_batches = math.ceil(n / bs)
        order = torch.randperm(n, generator=gen)  # the same on every rank: same seed, same draws
        # disable=None: tqdm shows the bar only when stderr is a terminal (a redirected log gets none)
        bar = tqdm(
            range(st.step, n_batches),
            total=n_batches,
            initial=st.step,
            desc=f"{desc} epoch {st.epoch}/{cfg.epochs}",
            disable=None if cfg.progress and info.is_main else True,
            leave=False,
        )
        te = time.perf_counter()
        first_step, t_first = st.step, te
        for _ in bar:
            idx = order[st.step * bs : (st.step + 1) * bs]  # the global batch
            shard, scale = None, 1.0
            if info.world > 1:
                dom = train.domain[idx]
                counts = torch.bincount(dom, minlength=self.n_domains)  # (N,) rows per domain, global batch
                t_counts = None if train.tasks is None else task_counts(train.tasks[idx], dom, self.n_domains)  # (T, N)
                shard = Shard(info.world, len(idx), counts, t_counts)
                mine = idx[shard_mask(dom, self.n_domains, info.rank, info.world)]
                if len(mine) == 0:  # a short last batch: take part in the collectives, contribute nothing
                    mine, scale = idx[:1], 0.0
                idx_local = mine
            else:
                idx_local = idx
            batch = train.batch(idx_local, shard).to(self.device)
            loss, terms = self._loss(net, batch)
            if scale != 1.0:
                loss = loss * scale
                terms = {k: v * scale for k, v in terms.items()}
            optimizer_step(loss, opts, functools.partial(self._check_finite, model, loss, terms, desc, st))
            values = {k: float(v) for k, v in terms.items()}
            for k, v in values.items():
                st.sums[k] = st.sums.get(k, 0.0) + v
            if self.tracker is not None and info.is_main:
                self.tracker.log_step(key or desc, st.global_step + 1, values)
            st.step += 1
            st.global_step += 1
            if (st.step % 20 == 0 or st.step == n_batches) and not bar.disable:
                # the bar's own ETA is this epoch's; `fit_left` adds the epochs still to come
                # (at most: early stopping may end sooner)
                per_batch = (time.perf_counter() - t_first) / (st.step - first_step)
                left = per_batch * (n_batches - st.step + (cfg.epochs - st.epoch) * n_batches)
                bar.set_postfix(
                    loss=f"{st.sums['click'] / st.step:.4f}", fit_left=f"{int(left // 60)}m{int(left % 60):02d}s"
                )
            if (
                ckpt is not None
                and key is not None
                and cfg.checkpoint_every
                and st.global_step % cfg.checkpoint_every == 0
                and st.step < n_batches
            ):
                st.epoch_seconds += time.perf_counter() - te
                te = time.perf_counter()
                self._save(ckpt, key, model, opts, gen_epoch, st, best_state, t0)
        bar.close()
        st.epoch_seconds += time.perf_counter() - te

    def _check_finite(
        self, model: nn.Module, loss: torch.Tensor, terms: dict[str, torch.Tensor], desc: str, st: _FitState
    ) -> None:
        """Stop before the optimizer step on a non-finite loss or gradient; the last checkpoint is untouched."""
        # One sum per gradient: NaN and ±inf propagate through it, and it reads each gradient once
        # (a max-abs or a norm costs up to 20x more); a finite sum overflowing (|g| ~ 1e38) is
        # reported too, rightly.
        grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
        # A sparse gradient's values as autograd left them (rows not yet merged): the same numbers
        # in the same sum, without the coalesce (a sort of every looked-up id) the table optimizer does anyway.
        sums = [(g._values() if g.is_sparse else g).sum() for g in grads]
        grad_ok = torch.stack(sums).isfinite().all() if sums else torch.tensor(True)
        flags = torch.stack([~torch.isfinite(loss.detach()), ~grad_ok]).to(self.device)
        bad_loss, bad_grad = any_rank(flags, self.dist).cpu().tolist()  # every rank stops together, none waits
        if not (bad_loss or bad_grad):
            return
        where = f"{desc}: epoch {st.epoch} step {st.step + 1} (optimizer step {st.global_step + 1})"
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        last = (
            f"; the last good checkpoint ({self.checkpoint.path}) is intact"
            if self.checkpoint is not None and self.checkpoint.exists()
            else ""
        )
        if bad_loss:
            rank = f" on rank {self.dist.rank}" if self.dist.world > 1 else ""
            raise FloatingPointError(f"{where}: non-finite loss{rank}: {shown}{last}")
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not _finite(p.grad)]
        raise FloatingPointError(
            f"{where}: non-finite gradient in {bad[:5]}{' ...' if len(bad) > 5 else ''} "
            f"with finite loss terms {shown}{last}"
        )

    def _epoch_record(
        self, st: _FitState, train: EncodedSplit, valid_metrics: dict, auc: float, info: DistInfo
    ) -> dict[str, Any]:
        n_batches = max(math.ceil(len(train) / self.config.batch_size), 1)
        sums = st.sums
        if info.world > 1:  # each rank's terms are its scaled share: their mean is the global term
            names = sorted(sums)
            total = torch.tensor([sums[k] for k in names], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(total)
            sums = {k: v / info.world for k, v in zip(names, total.cpu().tolist(), strict=False)}
        return {
            "epoch": st.epoch,
            "train_loss": {k: v / n_batches for k, v in sums.items()},
            "valid": valid_metrics,
            "valid_mean_auc": mean_auc(valid_metrics),
            "valid_selection_auc": auc,  # what early stopping compares (train.select_on)
            "train_seconds": st.epoch_seconds,
            "train_rows_per_s": len(train) / max(st.epoch_seconds, 1e-9),
        }

    def _save(
        self,
        ckpt: Checkpointer,
        key: str,
        model: nn.Module,
        opts: list[torch.optim.Optimizer],
        gen_epoch: torch.Tensor,
        st: _FitState,
        best_state: dict | None,
        t0: float,
    ) -> None:
        if not ckpt.write:  # another rank writes
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if best_state is not None:
            tensors.update({f"best.{k}": v for k, v in best_state.items()})
        opt_meta = []
        for i, opt in enumerate(opts):
            t, meta = flatten_optimizer(opt, f"opt{i}")
            tensors.update(t)
            opt_meta.append(meta)
        tensors["rng.shuffle"] = gen_epoch
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        record = asdict(st)
        record["seconds"] = st.seconds + (time.perf_counter() - t0)
        record.update(optimizers=opt_meta, has_best=best_state is not None)
        ckpt.save_progress(key, tensors, record)

    def _restore(
        self, saved: Any, model: nn.Module, opts: list[torch.optim.Optimizer], gen: torch.Generator
    ) -> tuple[_FitState, dict | None]:
        rec, tensors = saved.record, saved.tensors
        model.load_state_dict(_strip(tensors, "model."))
        if len(rec["optimizers"]) != len(opts):
            raise ConfigError(
                f"the checkpoint has {len(rec['optimizers'])} optimizer(s), "
                f"this model needs {len(opts)}; was sparse_embeddings changed?"
            )
        for i, (opt, meta) in enumerate(zip(opts, rec["optimizers"], strict=False)):
            restore_optimizer(opt, f"opt{i}", tensors, meta)
        gen.set_state(tensors["rng.shuffle"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        best = {k: v.to(self.device) for k, v in _strip(tensors, "best.").items()} if rec["has_best"] else None
        fields_ = {k: rec[k] for k in _FitState.__dataclass_fields__}
        return _FitState(**fields_), best


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _finite(g: torch.Tensor) -> bool:
    g = g.coalesce().values() if g.is_sparse else g
    return bool(torch.isfinite(g).all())
