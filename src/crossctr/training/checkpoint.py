"""Crash-safe training checkpoints: safetensors for tensors, JSON for the rest, nothing pickled.

A run folder's `checkpoint/` holds
    state.safetensors   the fit in progress: model, best-so-far weights, optimizer state
                        (flattened to tensors), RNG states as uint8 tensors; its metadata
                        "state" is JSON: fit key, epoch, step within epoch, best-so-far
                        record, early-stop counter, history, which fits are finished
    fit-<i>.safetensors one per finished fit (a strategy member or a stage of one): its final
                        weights, and its FitResult as JSON in the metadata

Every file goes through the one atomic write (crossctr.inference.runfolder.atomic_write), so a
crash or a full disk at any moment leaves the previous checkpoint whole. A finished fit's file is
written before the state that names it. The JSON keeps NaN and infinity as they were
(crossctr.jsonsafe.dumps: a best score of -inf before the first epoch reads back as -inf).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from crossctr.files import disk_full, file_in, human_bytes
from crossctr.inference.runfolder import atomic_write
from crossctr.jsonsafe import dumps, loads
from crossctr.schema import ConfigError

__all__ = ["Checkpointer", "CheckpointError", "SavedFit", "flatten_optimizer", "restore_optimizer"]

log = logging.getLogger(__name__)

FORMAT = "crossctr-checkpoint"
VERSION = 1
STATE = "state.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which file and why."""


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict as flat tensors `<prefix>.<param>.<name>` plus JSON for the rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars, "params": [str(p) for p in sd["state"]]}


def restore_optimizer(
    opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {int(pid): dict(meta["scalars"].get(pid, {})) for pid in meta["params"]}
    head = prefix + "."
    for key, value in tensors.items():
        if key.startswith(head):
            pid, name = key[len(head) :].split(".", 1)
            state[int(pid)][name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@dataclass
class SavedFit:
    """A fit read back from a checkpoint: its tensors and its JSON record."""

    tensors: dict[str, torch.Tensor]
    record: dict[str, Any]


class Checkpointer:
    """Reads and writes one run's `checkpoint/` folder; only the writing rank touches files.

    Args:
        folder: the checkpoint folder (created on first write).
        fingerprint: JSON-able description of the run (config, data sizes); a checkpoint
            written under another fingerprint is refused on resume.
        write: False on every rank but 0 under torchrun: those ranks read, never write.
    """

    def __init__(self, folder: str | Path, fingerprint: dict[str, Any], write: bool = True) -> None:
        self.folder = Path(folder)
        self.fingerprint = loads(dumps(fingerprint))  # as it will read back
        self.write = write
        self.finished: dict[str, str] = {}  # fit key -> file name
        self._progress: SavedFit | None = None

    @property
    def path(self) -> Path:
        return self.folder / STATE

    def exists(self) -> bool:
        return self.path.is_file()

    def reset(self) -> None:
        """A fresh run: forget any checkpoint an earlier run left in the folder."""
        self.finished, self._progress = {}, None
        if self.write and self.folder.is_dir():
            for p in self.folder.glob("*.safetensors"):
                p.unlink()
        self._drop_temp_files()

    def _drop_temp_files(self) -> None:
        """Temporary files a killed writer left behind (never the checkpoint itself)."""
        if self.write and self.folder.is_dir():
            for p in self.folder.glob(".*.tmp"):
                p.unlink(missing_ok=True)

    def load(self) -> None:
        """Read state.safetensors (resume); a missing, foreign or mismatched checkpoint is an error."""
        if not self.exists():
            raise ConfigError(
                f"--resume: no checkpoint at {self.path}; run without --resume to start training from scratch"
            )
        tensors, meta = self._read(self.path)
        state = loads(meta["state"])
        if state.get("fingerprint") != self.fingerprint:
            old, new = state.get("fingerprint") or {}, self.fingerprint
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"--resume: the checkpoint at {self.path} was written for a different run (differs in {diff}); use "
                "the same config and data, or start without --resume"
            )
        self.finished = dict(state["finished"])
        self._drop_temp_files()
        current = state.get("current")
        self._progress = SavedFit(tensors, current) if current is not None else None
        log.info(
            "resuming from %s: finished fits %s, in progress %s",
            self.path,
            sorted(self.finished),
            None if current is None else f"{current['key']} epoch {current['epoch']} step {current['step']}",
        )

    def finished_fit(self, key: str) -> SavedFit | None:
        """The saved result of fit `key` if it had finished before the restart."""
        name = self.finished.get(key)
        if name is None:
            return None
        try:
            path = file_in(self.folder, name, f"{STATE}'s finished fit {key!r}")
        except ConfigError as err:
            raise CheckpointError(str(err)) from None
        tensors, meta = self._read(path)
        return SavedFit(tensors, loads(meta["result"]))

    def progress(self, key: str) -> SavedFit | None:
        """The saved mid-fit state of fit `key`, if the checkpoint stopped inside it."""
        if self._progress is not None and self._progress.record["key"] == key:
            return self._progress
        return None

    def save_progress(self, key: str, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        """Replace the checkpoint with the state of fit `key` (tensors + JSON record)."""
        self._write_state(tensors, {"key": key, **record})

    def save_finished(self, key: str, weights: dict[str, torch.Tensor], result: dict[str, Any]) -> None:
        """Record fit `key` as finished with its final weights and result; no fit is in progress."""
        name = self.finished.get(key, f"fit-{len(self.finished)}.safetensors")
        if self.write:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._atomic(self.folder / name, _tensors(weights), {"format": FORMAT, "key": key, "result": dumps(result)})
        self.finished[key] = name
        self._progress = None
        self._write_state({}, None)

    def _write_state(self, tensors: dict[str, torch.Tensor], current: dict[str, Any] | None) -> None:
        if not self.write:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"version": VERSION, "fingerprint": self.fingerprint, "finished": self.finished, "current": current}
        self._atomic(self.path, _tensors(tensors), {"format": FORMAT, "state": dumps(state)})

    def _atomic(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        had_state = self.path.is_file()  # a checkpoint to resume from existed before this write
        blob = st_save(tensors, metadata=metadata)
        try:
            atomic_write(path, blob)
        except OSError as err:
            full = f" (disk full: {human_bytes(len(blob))} needed)" if disk_full(err) else ""
            if had_state:
                after = (
                    f"the previous checkpoint in {self.folder} is intact: free space, then resume from it with --resume"
                )
            else:
                after = (
                    "no checkpoint had been written yet, so there is nothing "
                    "to resume from: free space, then start the run again"
                )
            raise CheckpointError(f"could not write checkpoint {path}{full}: {err}; {after}") from err

    @staticmethod
    def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        try:
            data = path.read_bytes()
            tensors = st_load(data)
            meta = _metadata(data)
        except (OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a crossctr checkpoint (format {meta.get('format')!r})")
        return tensors, meta


def _tensors(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies that own their memory (safetensors refuses shared storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in d.items()}


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob (8-byte little-endian header length, JSON header)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {}) or {}
