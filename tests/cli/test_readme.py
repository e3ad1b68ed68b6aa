"""The README's examples run as written, in order (a user copies them).

Every fenced shell and YAML block of README.md is read from the README text and run, in the
README's order, in one temporary folder laid out as the README assumes: `.venv` links to the
environment running the tests, and every relative path of the README lies below that folder.
A block added to the README without a runner here fails the test (`BLOCKS`).

- `make demo`: the Makefile's own recipe (`make -n`, its set-up target taken as done: the
  venv is this one); `make test` is not run: it is the suite this test belongs to.
- The `my-logs` dataset YAML is validated as a schema (it names the user's own file); the
  two-platform YAML must say what `examples/two-platform/dataset.yaml` says, and `crossctr
  inspect` reads the sample with the README's text of it.
- The run config and its commands; the serving commands (`serve` as a subprocess on a free
  port, then the README's curl block against it); `inspect` / `prepare`; the experiments; the
  torchrun and `--resume` lines (the latter on a run killed after its first checkpoint).

The slow test runs every block exactly as written. The fast one (in CI) runs the same blocks
with only size knobs substituted, each through a documented flag or argument and each required
to find its text, so an edited README cannot slip past: the demo gets `--rows 36000 --epochs 1`
(the simulator's least rows; its default trains for minutes); the run config 36,000 rows, 1
epoch and a small CNAN-AT (`FAST`); each experiment `--seeds 0 --only table3 --methods
self_train` (a full grid trains for hours). The `paper` line runs as `smoke` (the same grid at
toy size, packaged for this) on the 36,000 simulated rows of `data/dataset.yaml` instead of the
registered 300,000, and its report is checked; the MovieLens-1M lines run on MovieLens-100k with
`--dry-run` (their experiment, the dataset built from its raw files and the plan are checked;
their grids train for minutes even shrunk) (`FAST_EXPERIMENTS`). Both variants substitute the
placeholder `/path/to/data` with the data root (CROSSCTR_DATA_ROOT, or `shared/data` beside the
repository; lines whose data is not there are not run, with a warning), and serve on a free port
instead of 8000 when 8000 is taken.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from crossctr.cli import cli
from crossctr.schema import DatasetSchema

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DATA_ROOT = Path(os.environ.get("CROSSCTR_DATA_ROOT") or REPO.parent / "shared" / "data")
# The README's fenced blocks in order: (language, a text that identifies the block).
BLOCKS = [
    ("bash", "make demo"),
    ("yaml", "name: my-logs"),
    ("yaml", "name: two-platform-sample"),
    ("yaml", "dataset: data/dataset.yaml"),
    ("bash", "crossctr simulate --out data"),
    ("", "src/crossctr/"),  # the layout tree: not a command
    ("bash", "crossctr predict runs/demo/cnan"),
    ("bash", "curl -s localhost:8000/v1/model"),
    ("bash", "crossctr inspect data/dataset.yaml"),
    ("bash", "crossctr experiment paper"),
    ("bash", "torchrun --nproc-per-node 2"),
]
FAST_DEMO = ["--rows", "36000", "--epochs", "1"]
FAST = {
    "--rows 300000": "--rows 36000",
    "train: {epochs: 5,": "train: {epochs: 1,",
    "model: {name: cnan}": (
        "model: {name: cnan, shared_dim: 8, specific_dim: 2, attention_hidden: [8, 4], deep: [16, 8]}"
    ),
}
FAST_EXPERIMENTS = {
    "paper --dataset simulator": "smoke --dataset data/dataset.yaml",
    "--dataset movielens-1m ": "--dataset movielens-100k ",
}
FAST_EXPERIMENT_FLAGS = {"--seeds": "0", "--only": "table3", "--methods": "self_train"}


def _blocks() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    found = re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
    assert [lang for lang, _ in found] == [
        lang for lang, _ in BLOCKS
    ], "README: its fenced blocks changed; give a new one a runner here"
    for (lang, body), (_, mark) in zip(found, BLOCKS, strict=False):
        assert mark in body, f"README: the {lang} block expected here holds no {mark!r}:\n{body}"
    return found


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def _substitute(commands: list[str], subs: dict[str, str]) -> list[str]:
    for old, new in subs.items():
        hits = sum(c.count(old) for c in commands)
        assert hits >= 1, f"README: expected {old!r} in {commands}"
        commands = [c.replace(old, new) for c in commands]
    return commands


class Readme:
    """Runs README blocks in `root`, as a user would from the folder the README speaks of."""

    def __init__(self, root: Path, fast: bool) -> None:
        self.root, self.fast, self.out = root, fast, {}
        (root / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "CROSSCTR_DATA_ROOT": str(DATA_ROOT)}

    def crossctr(self, command: str) -> str:
        args = shlex.split(command)
        assert args[0] == ".venv/bin/crossctr", command
        r = CliRunner().invoke(cli, args[1:])
        assert r.exit_code == 0, f"{command}\n{r.output}\n{r.exception!r}"
        self.out[" ".join(args[1:3])] = r.output
        return r.output

    def shell(self, command: str, timeout: float) -> str:
        r = subprocess.run(
            ["bash", "-e", "-c", command], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert r.returncode == 0, f"{command}\nexit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r.stdout


def _make_demo(rd: Readme, block: str) -> None:
    assert _commands(block) == ["make demo", "make test"], block
    recipe = rd.shell(
        f"make -n --no-print-directory -o .venv/bin/crossctr -f {shlex.quote(str(REPO / 'Makefile'))} demo", 60
    ).strip()
    assert recipe == ".venv/bin/crossctr demo --out runs/demo", recipe
    rd.crossctr(shlex.join([*shlex.split(recipe), *(FAST_DEMO if rd.fast else [])]))
    assert "AUC (test)" in rd.out["demo --out"]
    assert all((rd.root / "runs/demo" / f).is_file() for f in ("results.md", "results.json", "attention.png"))


def _dataset_yamls(rd: Readme, my_logs: str, two_platform: str) -> None:
    assert DatasetSchema.model_validate(yaml.safe_load(my_logs)).name == "my-logs"
    shipped = REPO / "examples/two-platform"
    assert yaml.safe_load(two_platform) == yaml.safe_load(
        (shipped / "dataset.yaml").read_text()
    ), "README and examples/two-platform disagree"
    folder = rd.root / "two-platform"
    shutil.copytree(shipped / "raw", folder / "raw")
    (folder / "dataset.yaml").write_text(two_platform)
    rd.crossctr(f".venv/bin/crossctr inspect {folder / 'dataset.yaml'} --out {folder / 'report'}")
    assert "book" in (folder / "report/inspect.md").read_text()


def _run_config(rd: Readme, yaml_text: str, block: str, later: str) -> None:
    commands = _commands(block) + _commands(later)
    if rd.fast:
        for old, new in FAST.items():
            hits = yaml_text.count(old) + sum(c.count(old) for c in commands)
            assert hits == 1, f"README example: expected {old!r} once, found it {hits} times"
            yaml_text = yaml_text.replace(old, new)
            commands = [c.replace(old, new) for c in commands]
    (rd.root / "run.yaml").write_text(yaml_text)
    for command in commands[: len(_commands(block))]:
        out = rd.crossctr(command)
        if "--data" in command:
            rd.out["evaluate --data"] = out
    assert "| AUC (test) | A | C | overall |" in rd.out["train --config"]  # domains: [A, C]
    assert "| AUC (test) | A | C | overall |" in rd.out["evaluate runs/cnan"]
    assert "| AUC (test) | A | C | overall |" in rd.out["evaluate --data"] and "left out" in rd.out["evaluate --data"]
    assert (rd.root / "runs/cnan/heldout/test.parquet").is_file()
    assert (rd.root / "runs/cnan/learning_curves.png").is_file()
    rd.later = commands[len(_commands(block)) :]  # the inspect / prepare block, run in its place


def _free_port(wanted: int) -> int:
    for port in (wanted, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise AssertionError("no free port")


def _serving(rd: Readme, block: str, curl: str) -> None:
    predict, export, serve = _commands(block)
    rd.crossctr(predict)
    assert (rd.root / "scored.parquet").is_file()
    rd.crossctr(export)
    assert (rd.root / "runs/demo/cnan-onnx").is_dir()
    port = _free_port(8000)
    assert serve.endswith("--port 8000") and curl.count("localhost:8000") == 2
    args = shlex.split(serve.replace("--port 8000", f"--port {port}"))
    server = subprocess.Popen(
        args,
        cwd=rd.root,
        env=rd.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_healthy(server, port)
        stdout = rd.shell(curl.replace("localhost:8000", f"localhost:{port}"), 60)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        log = server.communicate(timeout=30)[0]
    decoder, answers, i = json.JSONDecoder(), [], 0
    while i < len(stdout.rstrip()):
        answer, i = decoder.raw_decode(stdout, i)
        answers.append(answer)
    assert len(answers) == 2, f"{stdout}\n{log}"
    model, rank = answers
    assert model["domains"] == ["A", "B", "C"] and "version" in json.dumps(model), model
    assert rank["domain"] == "B" and rank["model_version"], rank
    scores = [item["score"] for item in rank["items"]]
    assert (
        len(scores) == 2 and scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    ), rank  # top_k 2, best first


def _wait_healthy(server: subprocess.Popen, port: int) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, f"serve exited {server.returncode}:\n{server.communicate()[0]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("serve did not answer /healthz within 180 s")


def _inspect_prepare(rd: Readme, block: str) -> None:
    assert rd.later == _commands(block)
    for command in rd.later:
        rd.crossctr(command)
    assert (rd.root / "report/inspect.md").is_file() and (rd.root / "prepared/prepared.json").is_file()


def _experiments(rd: Readme, block: str) -> list[str]:
    commands, not_run = _commands(block), []
    commands = [c.replace("/path/to/data", str(DATA_ROOT)) for c in commands]
    if rd.fast:
        commands = _substitute(commands, FAST_EXPERIMENTS)
        commands = [
            c + "".join(f" {k} {v}" for k, v in FAST_EXPERIMENT_FLAGS.items() if k not in shlex.split(c))
            for c in commands
        ]
        commands = commands[:1] + [c + " --dry-run" for c in commands[1:]]
    for command in commands:
        args = shlex.split(command)
        dataset = args[args.index("--dataset") + 1]
        if dataset.startswith("movielens") and not (DATA_ROOT / dataset).is_dir():
            not_run.append(command)
            continue
        output = rd.crossctr(command)
        if "--dry-run" in args:
            assert "self_train" in output, f"{command}: no planned Self-train run in\n{output}"
            continue
        out = (
            rd.root
            / "runs/experiments"
            / f"{args[2]}-{Path(dataset).parent.name if dataset.endswith('.yaml') else dataset}"
        )
        report = (out / "report.md").read_text()
        assert (out / "report.json").is_file() and (out / "results.jsonl").is_file(), command
        assert re.search(
            r"^\| Self-train[^|]*\|.*\d\.\d{3}", report, re.M
        ), f"{command}: no Self-train row in\n{report}"
    return not_run


def _torchrun(rd: Readme, block: str, caplog: pytest.LogCaptureFixture) -> None:
    ddp, resume = _commands(block)
    if not (Path(sys.prefix) / "bin/torchrun").exists():
        pytest.skip(f"torchrun is not installed in {sys.prefix}")
    rd.shell(ddp, 1800)
    assert (rd.root / "runs/ddp/weights.safetensors").is_file() and (rd.root / "runs/ddp/metrics.json").is_file()
    # `--resume` continues a killed run: kill one after its first checkpoint, then run the line.
    first = resume.replace(" --resume", "")
    killed = subprocess.Popen(
        shlex.split(first), cwd=rd.root, env=rd.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    while (
        not (rd.root / "runs/x/checkpoint/state.safetensors").exists()
        and killed.poll() is None
        and time.monotonic() < deadline
    ):  # written atomically, last
        time.sleep(0.01)
    killed.kill()
    killed.wait()
    unfinished = not (rd.root / "runs/x/metrics.json").exists()
    with caplog.at_level(logging.INFO, logger="crossctr"):
        rd.crossctr(resume)
    assert (rd.root / "runs/x/metrics.json").is_file()
    if unfinished:  # else the run ended between its checkpoint and the kill: nothing was left to resume
        assert "resuming from" in caplog.text, caplog.text


def _run_readme(root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fast: bool) -> None:
    blocks = _blocks()
    body = [b for _, b in blocks]
    monkeypatch.chdir(root)
    monkeypatch.setenv("CROSSCTR_DATA_ROOT", str(DATA_ROOT))
    rd = Readme(root, fast)
    steps = [
        ("make demo", lambda: _make_demo(rd, body[0])),
        ("dataset YAMLs", lambda: _dataset_yamls(rd, body[1], body[2])),
        ("run config", lambda: _run_config(rd, body[3], body[4], body[8])),
        ("serving", lambda: _serving(rd, body[6], body[7])),
        ("inspect / prepare", lambda: _inspect_prepare(rd, body[8])),
        ("experiments", lambda: not_run.extend(_experiments(rd, body[9]))),
        ("torchrun / resume", lambda: _torchrun(rd, body[10], caplog)),
    ]
    not_run: list[str] = []
    for name, step in steps:
        t0 = time.perf_counter()
        step()
        print(f"README {name}: {time.perf_counter() - t0:.0f} s")  # shown with -s or -rP
    if not_run:
        warnings.warn(f"README lines not run, their data is not under {DATA_ROOT}: {not_run}", stacklevel=1)


def test_readme_examples_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _run_readme(tmp_path, monkeypatch, caplog, fast=True)


@pytest.mark.slow
def test_readme_examples_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _run_readme(tmp_path, monkeypatch, caplog, fast=False)
