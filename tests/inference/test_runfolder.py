"""The one atomic write: a failed write leaves the old file and no temporary file; serving never
imports training (inference sits below both)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossctr.inference import runfolder
from crossctr.inference.runfolder import atomic_file, atomic_write

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    atomic_write(path, b"old")
    atomic_write(path, b"x" * (3 * (1 << 20) + 5))  # several chunks
    assert path.read_bytes() == b"x" * (3 * (1 << 20) + 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_partial_one(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    atomic_write(path, b"old content")

    def half_then_full(f, data):
        f.write(data[: len(data) // 2])
        f.flush()
        raise ENOSPC

    monkeypatch.setattr(runfolder, "_write_all", half_then_full)
    with pytest.raises(OSError) as err:
        atomic_write(path, b"new content that never lands")
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no .out.json.<pid>-XXXX.tmp left

    monkeypatch.undo()
    with pytest.raises(OSError):  # a file never written before: nothing at all is left
        with atomic_file(tmp_path / "new.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_the_temporary_file_sits_beside_the_target_and_names_the_writer(tmp_path: Path) -> None:
    with atomic_file(tmp_path / "weights.safetensors") as tmp:
        assert (
            tmp.parent == tmp_path
            and tmp.name.startswith(f".weights.safetensors.{os.getpid()}-")
            and tmp.suffix == ".tmp"
        )
        tmp.write_bytes(b"w")
        assert not (tmp_path / "weights.safetensors").exists()  # nothing at the target until the block ends
    assert (tmp_path / "weights.safetensors").read_bytes() == b"w" and not tmp.exists()


def _crossctr_modules_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(m for m in sys.modules if m.startswith('crossctr')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.split()


def test_serving_and_inference_import_no_training_module() -> None:
    served = _crossctr_modules_after("import crossctr.serving.app, crossctr.serving.predict, crossctr.serving.cli")
    assert "crossctr.serving.app" in served and "crossctr.inference.predictor" in served  # the import did happen
    assert [m for m in served if m.startswith("crossctr.training")] == []
    inference = _crossctr_modules_after("import crossctr.inference")
    assert [
        m for m in inference if m.startswith(("crossctr.training", "crossctr.serving", "crossctr.evaluation"))
    ] == []
