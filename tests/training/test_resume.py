"""Crash-safe checkpoints: a SIGKILLed run resumes to the same weights; guards keep the last good checkpoint."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import crossctr.inference.runfolder as runfolder_mod
from crossctr.models import CNANConfig, build_model
from crossctr.schema import ConfigError
from crossctr.training.checkpoint import Checkpointer, CheckpointError
from crossctr.training.config import TrainConfig
from crossctr.training.run import RunConfig, train_run
from crossctr.training.trainer import Trainer

SMALL = {"shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [32, 16]}

# Runs the CLI with every training step slowed down, so the test can kill it mid-epoch.
SLOW_CLI = """
import sys, time
import crossctr.training.trainer as t
loss = t.Trainer._loss
def slow(self, *a, **k):
    time.sleep(0.02)
    return loss(self, *a, **k)
t.Trainer._loss = slow
from crossctr.cli import main
sys.argv = ["crossctr", *sys.argv[1:]]
main()
"""


@pytest.fixture(autouse=True)
def _keep_torch_settings():
    """In-process runs here use 1 thread (fast and repeatable on a shared
    CPU), some deterministic mode; put both back."""
    n, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(n)
    torch.use_deterministic_algorithms(det)


def _state(path: Path) -> dict:
    """The checkpoint's state metadata, from one read of the file: safe_open maps the path a
    second time, which can meet the next checkpoint replacing it while the run is writing."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(json.loads(blob[8 : 8 + n])["__metadata__"]["state"])


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_sigkill_mid_epoch_then_resume_ends_bit_identical(tiny_dataset_dir: Path) -> None:
    run = {
        "dataset": "dataset.yaml",
        "model": {"name": "cnan", **SMALL},
        "train": {
            "epochs": 3,
            "batch_size": 128,
            "patience": 5,
            "progress": False,
            "threads": 1,
            "device": "cpu",
            "deterministic": True,
            "checkpoint_every": 4,
        },
    }
    (tiny_dataset_dir / "run.yaml").write_text(yaml.safe_dump(run))
    train = ["train", "--config", "run.yaml", "--out"]
    victim = _run(["-c", SLOW_CLI, *train, "killed"], tiny_dataset_dir)
    whole = _run(["-m", "crossctr", *train, "whole"], tiny_dataset_dir)  # the uninterrupted reference
    state = tiny_dataset_dir / "killed" / "checkpoint" / "state.safetensors"
    deadline = time.monotonic() + 120
    # Kill once a mid-epoch checkpoint of epoch 2 exists: the run then has history, a best
    # epoch, optimizer moments and a half-used permutation to get back.
    while time.monotonic() < deadline and victim.poll() is None:
        if state.exists() and (cur := _state(state)["current"]) and cur["epoch"] == 2 and cur["step"] >= 4:
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert not (tiny_dataset_dir / "killed" / "weights.safetensors").exists()

    resumed = _run(["-m", "crossctr", *train, "killed", "--resume"], tiny_dataset_dir)
    for p in (resumed, whole):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    a, b = (
        load_file(tiny_dataset_dir / "whole" / "weights.safetensors"),
        load_file(tiny_dataset_dir / "killed" / "weights.safetensors"),
    )
    assert _same(a, b)  # bit-identical, not merely close
    # The whole trajectory matches too: every epoch's summed training losses, to the last bit.
    hw = json.loads((tiny_dataset_dir / "whole" / "history.json").read_text())["joint"]
    hk = json.loads((tiny_dataset_dir / "killed" / "history.json").read_text())["joint"]
    assert [h["train_loss"] for h in hw] == [h["train_loss"] for h in hk] and len(hw) == 3


def _cfg(strategy: str = "joint", **train) -> RunConfig:
    train = {"epochs": 2, "batch_size": 128, "progress": False, "patience": 5, "threads": 1, **train}
    return RunConfig(dataset="unused", model={"name": "cnan", **SMALL}, strategy={"name": strategy}, train=train)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "weights.safetensors")


def test_self_train_resumes_per_member(tmp_path: Path, tiny_data, monkeypatch) -> None:
    cfg = _cfg("self_train", checkpoint_every=3)
    train_run(cfg, tmp_path / "whole", tiny_data)

    calls = {"n": 0}
    loss = Trainer._loss

    def crash_in_member_b(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 24 + 8:  # A: 12 batches x 2 epochs; then B's epoch 2, step 2
            raise RuntimeError("simulated crash")
        return loss(self, *a, **k)

    monkeypatch.setattr(Trainer, "_loss", crash_in_member_b)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, tmp_path / "crashed", tiny_data)
    state = _state(tmp_path / "crashed" / "checkpoint" / "state.safetensors")
    assert list(state["finished"]) == ["A"] and state["current"]["key"] == "B"

    monkeypatch.setattr(Trainer, "_loss", loss)
    trained: list[str] = []
    run_epoch = Trainer._run_epoch
    monkeypatch.setattr(Trainer, "_run_epoch", lambda self, *a: (trained.append(a[7]), run_epoch(self, *a))[1])
    res = train_run(cfg, tmp_path / "crashed", tiny_data, resume=True)
    assert not any("self-train A" in d for d in trained)  # the finished member was not trained again
    assert res.result.fits["A"].best_epoch in (1, 2) and len(res.result.fits["A"].history) == 2
    assert _same(_weights(tmp_path / "whole"), _weights(tmp_path / "crashed"))


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path: Path, tiny_data, monkeypatch) -> None:
    cfg = _cfg(checkpoint_every=3)
    writes = {"n": 0}
    write_all = runfolder_mod._write_all

    def full_disk(f, data):
        writes["n"] += 1
        if writes["n"] == 3:  # the third checkpoint write: half of it lands, then ENOSPC
            f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_all(f, data)

    monkeypatch.setattr(runfolder_mod, "_write_all", full_disk)
    with pytest.raises(CheckpointError, match=r"disk full.*previous checkpoint .* is intact"):
        train_run(cfg, tmp_path, tiny_data)
    folder = tmp_path / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["state.safetensors"]  # no half-written temp file left
    cur = _state(folder / "state.safetensors")["current"]
    assert cur["global_step"] == 6  # the second checkpoint, whole
    assert all(
        torch.isfinite(v).all() for k, v in load_file(folder / "state.safetensors").items() if v.is_floating_point()
    )

    monkeypatch.setattr(runfolder_mod, "_write_all", write_all)
    train_run(cfg, tmp_path, tiny_data, resume=True)
    train_run(cfg, tmp_path / "whole", tiny_data)
    assert _same(_weights(tmp_path), _weights(tmp_path / "whole"))


def test_non_finite_gradient_stops_before_the_step_and_keeps_the_checkpoint(tmp_path: Path, tiny_data) -> None:
    cfg = TrainConfig(epochs=1, batch_size=128, progress=False, checkpoint_every=2, threads=1)
    ckpt = Checkpointer(tmp_path / "checkpoint", {"test": 1})
    trainer = Trainer(cfg, ["A", "B", "C"], checkpoint=ckpt)
    torch.manual_seed(0)
    model = build_model(CNANConfig(**SMALL), tiny_data.encoder.cardinalities, 3)
    seen = {"n": 0}

    def poison(g: torch.Tensor) -> torch.Tensor:
        seen["n"] += 1
        return g * float("nan") if seen["n"] == 5 else g

    weight = dict(model.named_parameters())["discriminator.weight"]
    weight.register_hook(poison)
    with pytest.raises(
        FloatingPointError,
        match=r"epoch 1 step 5 .*non-finite gradient in \['discriminator.weight'\] "
        r"with finite loss terms click=.*adv=.*intact",
    ):
        trainer.fit(model, tiny_data.train, tiny_data.valid, desc="joint", key="joint")
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step was not taken
    state = _state(ckpt.path)
    assert state["current"]["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in load_file(ckpt.path).values() if v.is_floating_point())


def test_non_finite_loss_names_the_terms(tiny_data) -> None:
    cfg = TrainConfig(
        epochs=1, progress=False, threads=1, loss_weights={"adv": float("inf"), "domain": 0.05, "disc": 1.0}
    )
    trainer = Trainer(cfg, ["A", "B", "C"])
    model = build_model(CNANConfig(**SMALL), tiny_data.encoder.cardinalities, 3)
    with pytest.raises(FloatingPointError, match=r"step 1 .*non-finite loss: click=.*, disc=.*, adv=.*, domain="):
        trainer.fit(model, tiny_data.train, tiny_data.valid)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path: Path, tiny_data) -> None:
    cfg = _cfg(epochs=1)
    train_run(cfg, tmp_path, tiny_data)
    other = _cfg(epochs=1, lr=0.01)
    with pytest.raises(ConfigError, match=r"written for a different run \(differs in \['run'\]\)"):
        train_run(other, tmp_path, tiny_data, resume=True)
    with pytest.raises(ConfigError, match="no checkpoint at"):
        train_run(cfg, tmp_path / "new", tiny_data, resume=True)
