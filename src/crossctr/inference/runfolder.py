"""The run folder on disk: the one atomic write, writing a trained run, reading it back.

A run folder holds everything a predictor needs, nothing pickled:
    config.json          run config, model config, cardinalities, members and routing, version
    encoders.json        fitted vocabularies and buckets, with the dataset schema
    weights.safetensors  every member's weights, keys prefixed "<member>."
    metrics.json         per-domain validation and test AUC / log loss (and per task, multi-task)
    history.json         per-epoch losses and validation metrics
    attention.json       mean attention weight per feature and per feature group, per domain
    split.json           rows per split and domain, digests of the encoded splits (evaluation.split)
    checkpoint/          training state for `--resume` after a crash (training.checkpoint)

Every file crossctr writes whole goes through `atomic_write` (bytes) or `atomic_file` (a
temporary path for writers that want a file name): a temporary file beside the target, fsynced,
renamed over it, then the folder fsynced, so a crash or a full disk at any moment leaves the
target old or new, never half. The temporary name `.NAME.<pid>-XXXX.tmp` carries the writer's
pid (crossctr.files.remove_stale).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "notes.txt", b"whole or not at all")
    >>> (folder / "notes.txt").read_bytes()
    b'whole or not at all'
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from safetensors.torch import save_file
from torch import nn

from crossctr.data.encoders import FeatureEncoder
from crossctr.files import check_space, set_new_file_mode
from crossctr.jsonsafe import finite, json_default
from crossctr.models import parse_model_config
from crossctr.schema import ConfigError

__all__ = [
    "atomic_write",
    "atomic_file",
    "temp_file_beside",
    "commit_temp_file",
    "write_json",
    "write_run_folder",
    "load_encoder",
    "check_config",
    "DAMAGED",
]

_CHUNK = 1 << 20  # bytes per write() call

DAMAGED = "the run folder is damaged or was edited: train again, or restore the folder from a copy"


# ---- the one atomic write ----


def temp_file_beside(path: Path) -> Path:
    """A new empty file `.NAME.<pid>-XXXX.tmp` in `path`'s folder, with the mode a plain new file gets."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        set_new_file_mode(fd)  # mkstemp makes 0600; the file gets the mode the user's umask gives any new file
    finally:
        os.close(fd)
    return Path(tmp)


def commit_temp_file(tmp: Path, path: Path) -> None:
    """fsync `tmp`, rename it over `path`, fsync the folder: `path` is old or new, never half."""
    set_new_file_mode(tmp)  # some writers (safetensors) replace the file with one of mode 0600
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename itself is atomic
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; committed when the block ends, removed if it raises.

    For writers that take a file name (safetensors, torch.jit.save); bytes in memory go through `atomic_write`.
    """
    tmp = temp_file_beside(path)
    try:
        yield tmp
        commit_temp_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_all(f: BinaryIO, data: bytes) -> None:
    """Write `data` in chunks (one place a test can make a write fail midway)."""
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        f.write(view[start : start + _CHUNK])


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: whole or not at all, even on a crash or a full disk."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        _write_all(f, data)


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON (numpy values allowed, NaN refused: pass results through `jsonsafe.finite`), atomically."""
    atomic_write(path, json.dumps(obj, indent=2, default=json_default, allow_nan=False).encode())


# ---- writing a trained run ----


def write_run_folder(
    out: Path, encoder: FeatureEncoder, members: dict[str, nn.Module], config: dict[str, Any], results: dict[str, Any]
) -> None:
    """encoders.json, weights.safetensors, config.json, then each of `results` as `<name>.json`.

    `config` is config.json's object (see `check_config` for the keys a predictor needs); a
    result's NaN and infinity are written as null. A disk that cannot hold the weights is a
    DiskFullError before anything of them is written.
    """
    atomic_write(
        out / "encoders.json", json.dumps(encoder.to_dict(), indent=1).encode()
    )  # as FeatureEncoder.save writes it
    state = {
        f"{m}.{k}": v.detach().cpu().contiguous() for m, model in members.items() for k, v in model.state_dict().items()
    }
    check_space(out, sum(v.numel() * v.element_size() for v in state.values()), "the run's weights")
    with atomic_file(out / "weights.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "crossctr"})
    write_json(out / "config.json", config)
    for name, obj in results.items():
        write_json(out / f"{name}.json", finite(obj))


# ---- reading it back ----


def load_encoder(path: Path) -> FeatureEncoder:
    """A run or export folder's encoders.json; a damaged file is a ConfigError naming it."""
    try:
        return FeatureEncoder.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; {DAMAGED}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:  # not JSON, or not what `save` writes
        raise ConfigError(
            f"{path}: cannot be read as fitted encoders ({type(err).__name__}: {err}); {DAMAGED}"
        ) from None


def check_config(config: Any, encoder: FeatureEncoder, source: str) -> Any:
    """config.json's keys a predictor relies on, checked once; returns the parsed model config."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: holds a JSON {type(config).__name__}, not an object; {DAMAGED}")
    missing = [k for k in ("model", "cardinalities", "domains", "members", "route") if k not in config]
    if missing:
        raise ConfigError(f"{source}: missing key(s) {missing}; {DAMAGED}")
    model_cfg = parse_model_config(config["model"], f"{source}: model")
    domains, members, route = config["domains"], config["members"], config["route"]
    if domains != list(encoder.schema.domain.values):
        raise ConfigError(
            f"{source}: domains {domains!r} differ from encoders.json's {list(encoder.schema.domain.values)}; {DAMAGED}"
        )
    if not (isinstance(members, list) and members and all(isinstance(m, str) for m in members)):
        raise ConfigError(f"{source}: members must be a non-empty list of names, got {members!r}; {DAMAGED}")
    if not (isinstance(route, dict) and set(route) == set(domains) and set(route.values()) <= set(members)):
        raise ConfigError(
            f"{source}: route {route!r} must send each domain {domains} to one of the members {members}; {DAMAGED}"
        )
    cards = config["cardinalities"]
    if not (isinstance(cards, list) and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in cards)):
        raise ConfigError(f"{source}: cardinalities must be a list of positive integers, got {cards!r}; {DAMAGED}")
    return model_cfg
