"""`crossctr predict`'s output file: a full disk, temp files of a killed predict, file modes."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crossctr.files import DiskFullError
from crossctr.inference import atomic_write
from crossctr.serving import predict as predict_module
from crossctr.serving.predict import predict_file


@pytest.fixture()
def rows(tmp_path: Path, tiny_table) -> Path:
    path = tmp_path / "in" / "new.parquet"
    path.parent.mkdir()
    pq.write_table(tiny_table(2000, seed=5).drop_columns(["click"]), path)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_full_disk_is_a_clean_error_and_leaves_nothing(
    cli_run, monkeypatch, capsys, tmp_path: Path, run_dir: Path, rows: Path, suffix: str
) -> None:
    write = predict_module._Writer.write
    calls = {"n": 0}

    def fills(self, table):
        calls["n"] += 1
        if calls["n"] > 1:  # the second batch does not fit
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        write(self, table)

    monkeypatch.setattr(predict_module._Writer, "write", fills)
    out = tmp_path / "out" / f"scored{suffix}"
    code, err = cli_run("predict", str(run_dir), str(rows), "--out", str(out), "--batch-rows", "500", "--no-progress")
    assert code != 0 and err.startswith(f"error: {out.parent}: the disk filled while writing scored{suffix}: ")
    assert "for 500 rows were written" in err and "(the partial file was removed)" in err
    assert list(out.parent.iterdir()) == []
    with pytest.raises(DiskFullError):
        calls["n"] = 0
        predict_file(run_dir, rows, out, batch_rows=500, progress=False)


def test_rerun_removes_temp_files_of_killed_predicts_and_never_reads_them(
    tmp_path: Path, run_dir: Path, rows: Path, predictor
) -> None:
    out = tmp_path / "scored.parquet"
    dead = tmp_path / f".scored.parquet.{_dead_pid()}-abc123.tmp"
    live = tmp_path / f".scored.parquet.{os.getppid()}-def456.tmp"  # a predict still running
    legacy = tmp_path / ".scored.parquet.k2j3h4g5.tmp"  # an older crossctr's name, no pid: by age
    fresh_legacy = tmp_path / ".scored.parquet.zz9yy8xx.tmp"
    other = tmp_path / f".other.parquet.{_dead_pid()}-abc123.tmp"
    for path in (dead, live, legacy, fresh_legacy, other):
        path.write_bytes(b"PAR1 half a file")
    old = time.time() - 3 * 24 * 3600
    os.utime(legacy, (old, old))
    predict_file(run_dir, rows, out, progress=False)
    assert not dead.exists() and not legacy.exists()
    assert live.exists() and fresh_legacy.exists() and other.exists()
    assert pq.read_table(out).num_rows == 2000  # the output is this run's, whole


def test_output_modes_follow_the_umask(tmp_path: Path, run_dir: Path, rows: Path) -> None:
    umask = 0o027  # not the usual 022: a file that ignores the umask shows
    old = os.umask(umask)
    try:
        predict_file(run_dir, rows, tmp_path / "scored.csv", progress=False)
        atomic_write(tmp_path / "export.json", b"{}")  # how export writes model.onnx and export.json
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()}
    assert modes == {"scored.csv": 0o640, "export.json": 0o640}
