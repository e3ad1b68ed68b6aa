"""`crossctr prepare` on a full disk, after a killed run, and a prepared folder with a pickled
array. Full disks are simulated: the free space reported, or the file writes, fail."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import crossctr.data.prepare as prepare_module
import crossctr.files as files
from crossctr.data.prepare import PrepareOptions, load_prepared, prepare_dataset
from crossctr.files import DiskFullError
from crossctr.schema import ConfigError

OPTS = PrepareOptions(progress=False, batch_rows=500)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_no_room_is_refused_before_writing_naming_folder_and_bytes(
    cli_run, monkeypatch, capsys, tiny_dataset_dir: Path
) -> None:
    monkeypatch.setattr(files, "free_bytes", lambda folder: 10_000)
    out = tiny_dataset_dir / "prepared"
    code, err = cli_run("prepare", str(tiny_dataset_dir / "dataset.yaml"), "--out", str(out), "--no-progress")
    assert code != 0 and err.startswith(
        f"error: {tiny_dataset_dir}: not enough disk space for prepared's arrays (3,000 rows)"
    )
    assert "10.0 KB free" in err and "bytes of data" in err
    assert not out.exists() and _leftovers(tiny_dataset_dir) == []


class _FillingFile(io.FileIO):
    """A file whose writes fail with ENOSPC once `budget` bytes went to array files."""

    budget = [0]

    def write(self, b) -> int:
        if str(self.name).endswith(".npy") and self.mode != "wb":  # block writes, after the header
            if self.budget[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.name))
            n = min(len(b), self.budget[0])
            self.budget[0] -= n
            return super().write(memoryview(b)[:n])  # a short write, as a disk about to fill gives
        return super().write(b)


def test_disk_filling_while_writing_stops_cleanly_and_removes_the_temp_folder(
    monkeypatch, tiny_dataset_dir: Path
) -> None:
    _FillingFile.budget[0] = 5_000
    real_open = open

    def filling_open(path, mode="r", *args, **kwargs):
        if "b" in mode and kwargs.get("buffering", args[0] if args else -1) == 0:
            return _FillingFile(path, mode.replace("b", ""))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(prepare_module, "open", filling_open, raising=False)
    out = tiny_dataset_dir / "prepared"
    with pytest.raises(
        DiskFullError,
        match=r"the disk filled while writing prepared's arrays .* they need .* bytes\), .* free space or choose "
        r"another --out \(the partial folder was removed\)",
    ):
        prepare_dataset(tiny_dataset_dir / "dataset.yaml", out, OPTS)
    assert _FillingFile.budget[0] == 0  # the writes did reach the injected file
    assert not out.exists() and _leftovers(tiny_dataset_dir) == []


def test_rerun_removes_temp_folders_of_killed_runs_and_never_reads_them(tiny_dataset_dir: Path) -> None:
    out = tiny_dataset_dir / "prepared"
    dead = tiny_dataset_dir / f".prepared.tmp-{_dead_pid()}"
    live = tiny_dataset_dir / f".prepared.tmp-{os.getppid()}"  # a prepare still running elsewhere
    other = tiny_dataset_dir / f".other.tmp-{_dead_pid()}"  # another output's: not ours to remove
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "train.features.npy").write_bytes(b"half-written")
        (folder / "prepared.json").write_text('{"format": 1}')
    prepare_dataset(tiny_dataset_dir / "dataset.yaml", out, OPTS)
    assert not dead.exists() and live.is_dir() and other.is_dir()
    assert load_prepared(out).splits["train"].features.shape[1] == 3
    dead.mkdir()  # a run killed after the first one finished: the cached folder's rerun cleans too
    assert prepare_dataset(tiny_dataset_dir / "dataset.yaml", out, OPTS).reused and not dead.exists()


def test_prepared_arrays_are_byte_identical_to_numpy_save(tiny_dataset_dir: Path) -> None:
    out = tiny_dataset_dir / "prepared"
    prepare_dataset(tiny_dataset_dir / "dataset.yaml", out, OPTS)
    for path in out.glob("*.npy"):
        arr = np.load(path)
        buf = io.BytesIO()
        np.save(buf, arr)
        assert path.read_bytes() == buf.getvalue(), path.name


def test_pickled_npy_is_refused_without_a_traceback(cli_run, monkeypatch, capsys, tiny_dataset_dir: Path) -> None:
    out = tiny_dataset_dir / "prepared"
    prepare_dataset(tiny_dataset_dir / "dataset.yaml", out, OPTS)
    label = (out / "train.label.npy").read_bytes()
    np.save(out / "train.label.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match=r"train\.label\.npy: not an array `crossctr prepare` writes .*--force"):
        load_prepared(out)
    (out / "train.label.npy").write_bytes(label)
    (out / "valid.domain.npy").write_bytes(b"\x93NUMPY")  # truncated
    with pytest.raises(ConfigError, match=r"valid\.domain\.npy: not an array"):
        load_prepared(out)
    (tiny_dataset_dir / "run.yaml").write_text(
        f"dataset: {out.name}\nmodel: {{name: cnan}}\ntrain: {{epochs: 1, progress: false}}\n"
    )
    code, err = cli_run("train", "--config", str(tiny_dataset_dir / "run.yaml"), "--out", str(tiny_dataset_dir / "run"))
    assert code != 0 and "not an array `crossctr prepare` writes" in err
