"""A run folder on a full disk, an existing run folder, a failed run, file modes, and a checkpoint
that names a file outside its folder. Write failures are injected (monkeypatch)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from crossctr.files import DiskFullError
from crossctr.inference import runfolder as runfolder_module
from crossctr.schema import ConfigError
from crossctr.training import checkpoint as ckpt_module
from crossctr.training.checkpoint import CheckpointError
from crossctr.training.run import RunConfig, train_run

SMALL = {"name": "cnan", "shared_dim": 4, "specific_dim": 2, "attention_hidden": [4, 2], "deep": [8, 4]}
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _cfg(**train) -> RunConfig:
    return RunConfig(dataset="unused", model=SMALL, train={"epochs": 1, "progress": False, **train})


@pytest.fixture()
def run_yaml(tiny_dataset_dir: Path) -> Path:
    path = tiny_dataset_dir / "run.yaml"
    path.write_text(json.dumps({"dataset": "dataset.yaml", "model": SMALL, "train": {"epochs": 1, "progress": False}}))
    return path


# ---- an existing run folder needs --resume or --overwrite ----


def test_train_into_existing_run_refuses_without_overwrite(
    cli_run, monkeypatch, capsys, run_yaml: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert cli_run("train", "--config", str(run_yaml), "--out", str(out))[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoint").iterdir()}
    code, err = cli_run("train", "--config", str(run_yaml), "--out", str(out))
    assert code != 0 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "checkpoint").iterdir()} == before  # untouched
    code, err = cli_run("train", "--config", str(run_yaml), "--out", str(out), "--resume", "--overwrite")
    assert code != 0 and "pass one of them" in err
    assert cli_run("train", "--config", str(run_yaml), "--out", str(out), "--overwrite")[0] == 0
    assert (out / "weights.safetensors").is_file()


def test_train_into_an_empty_or_new_folder_needs_no_flag(
    cli_run, monkeypatch, capsys, run_yaml: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    assert cli_run("train", "--config", str(run_yaml), "--out", str(tmp_path / "empty"))[0] == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, err = cli_run("train", "--config", str(run_yaml), "--out", str(tmp_path / "other"))
    assert code != 0 and "already holds files (notes.txt)" in err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# ---- a failed run leaves no empty folder ----


def test_failed_run_leaves_no_empty_out_folder(tmp_path: Path, tiny_data) -> None:
    cfg = RunConfig(dataset=str(tmp_path / "missing.yaml"), model=SMALL, train={"epochs": 1, "progress": False})
    with pytest.raises((ConfigError, FileNotFoundError, OSError)):
        train_run(cfg, tmp_path / "a" / "run")
    assert not (tmp_path / "a" / "run").exists()
    bad = RunConfig(
        dataset="unused", model={**SMALL, "tasks": 2}, train={"epochs": 1, "progress": False}
    )  # the dataset declares no task columns
    with pytest.raises(ConfigError):
        train_run(bad, tmp_path / "b", tiny_data)
    assert not (tmp_path / "b").exists()
    (tmp_path / "kept").mkdir()  # a folder the user made is never removed
    with pytest.raises(ConfigError):
        train_run(bad, tmp_path / "kept", tiny_data)
    assert (tmp_path / "kept").is_dir()


# ---- a full disk ----


def test_full_disk_before_any_checkpoint_does_not_claim_one_is_intact(monkeypatch, tmp_path: Path, tiny_data) -> None:
    def full(f, data):
        raise ENOSPC

    monkeypatch.setattr(runfolder_module, "_write_all", full)
    with pytest.raises(CheckpointError) as err:
        train_run(_cfg(checkpoint_every=2), tmp_path / "run", tiny_data)
    msg = str(err.value)
    assert "disk full" in msg and "no checkpoint had been written yet" in msg and "intact" not in msg
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_full_disk_after_a_checkpoint_says_it_is_intact(monkeypatch, tmp_path: Path, tiny_data) -> None:
    writes = {"n": 0}
    write_all = runfolder_module._write_all

    def full_after_one(f, data):
        writes["n"] += 1
        if writes["n"] > 1:
            raise ENOSPC
        write_all(f, data)

    monkeypatch.setattr(runfolder_module, "_write_all", full_after_one)
    with pytest.raises(
        CheckpointError, match=r"the previous checkpoint in .* is intact: free space, then resume from it with --resume"
    ):
        train_run(_cfg(checkpoint_every=2), tmp_path / "run", tiny_data)


def test_full_disk_while_writing_weights_is_a_clean_error(monkeypatch, capsys, tmp_path: Path, tiny_data) -> None:
    def full(state, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise RuntimeError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )  # as safetensors says it

    monkeypatch.setattr(runfolder_module, "save_file", full)
    with pytest.raises(DiskFullError, match=r"the disk filled while the run folder was written .* --resume"):
        train_run(_cfg(), tmp_path / "run", tiny_data)
    assert (
        not list((tmp_path / "run").glob(".weights.safetensors*.tmp"))
        and not (tmp_path / "run" / "weights.safetensors").exists()
    )
    monkeypatch.setattr(runfolder_module, "save_file", save_file)
    res = train_run(_cfg(), tmp_path / "run", tiny_data, resume=True)  # the finished training is reused
    assert (tmp_path / "run" / "weights.safetensors").is_file() and res.metrics["test"]


def test_no_room_for_weights_is_refused_before_writing(monkeypatch, tmp_path: Path, tiny_data) -> None:
    import crossctr.files as files

    monkeypatch.setattr(files, "free_bytes", lambda folder: 1000)
    with pytest.raises(DiskFullError, match=r"not enough disk space for the run's weights: needs .* bytes of data"):
        train_run(_cfg(), tmp_path / "run", tiny_data)
    assert not (tmp_path / "run" / "weights.safetensors").exists()


# ---- file modes follow the umask ----


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_folder_file_modes_follow_the_umask(tmp_path: Path, tiny_data, umask: int) -> None:
    old = os.umask(umask)
    try:
        train_run(_cfg(checkpoint_every=5), tmp_path / "run", tiny_data)
    finally:
        os.umask(old)
    modes = {
        str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
        for p in (tmp_path / "run").rglob("*")
        if p.is_file()
    }
    assert "run/weights.safetensors" in modes and "run/checkpoint/state.safetensors" in modes
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


# ---- a checkpoint may not name a file outside its folder ----


def test_checkpoint_naming_a_file_outside_is_refused_on_resume(tmp_path: Path, tiny_data) -> None:
    out = tmp_path / "run"
    train_run(_cfg(), out, tiny_data)
    folder = out / "checkpoint"
    shutil.copyfile(folder / "fit-0.safetensors", tmp_path / "elsewhere.safetensors")
    data = (folder / "state.safetensors").read_bytes()
    meta = ckpt_module._metadata(data)
    state = json.loads(meta["state"])
    state["finished"] = {k: "../../elsewhere.safetensors" for k in state["finished"]}
    save_file(
        load_file(folder / "state.safetensors"),
        str(folder / "state.safetensors"),
        metadata={**meta, "state": json.dumps(state)},
    )
    with pytest.raises(
        CheckpointError,
        match=r"finished fit 'joint' is '\.\./\.\./elsewhere\.safetensors', not a file name inside the folder",
    ):
        train_run(_cfg(), out, tiny_data, resume=True)


def test_dead_pid_is_not_alive() -> None:
    from crossctr.files import pid_alive

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert pid_alive(os.getpid()) and not pid_alive(proc.pid) and not pid_alive(0)
