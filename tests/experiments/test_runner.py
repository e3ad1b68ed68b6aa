"""The runner: end to end on simulated data, resumable, tuning on validation AUC, one line per run."""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from crossctr.data.dataset import prepare
from crossctr.data.simulator import SimulatorConfig, write_simulated_dataset
from crossctr.experiments.grid import Experiment, candidate_id, load_experiment
from crossctr.experiments.records import RESULTS_FILE, ResultsFile
from crossctr.experiments.runner import run_experiment
from crossctr.experiments.scheduler import Claims
from crossctr.schema import DatasetSchema
from crossctr.training.run import RunResult
from crossctr.training.strategies import StrategyResult


def _subset(exp: Experiment, tables: dict, methods: list[str], tune: dict | None = None) -> Experiment:
    """A smaller experiment from a packaged one: some methods, some tables."""
    doc = exp.model_dump(mode="json")
    doc["methods"] = {m: doc["methods"][m] for m in methods}
    for m in doc["methods"].values():
        if m.get("tune_from") and m["tune_from"] not in (tune or {}):
            m["tune_from"] = None
    doc["tables"], doc["tune"] = tables, tune or {}
    return Experiment.model_validate(doc)


def _latest(out: Path) -> dict[str, dict]:
    """key -> its last record in out/results.jsonl, as the JSON written there."""
    return {k: r.to_json() for k, r in ResultsFile(out / RESULTS_FILE).latest().items()}


class FakeTrain:
    """Deterministic, instant stand-in for train_run: validation AUC peaks at adv = 0.05."""

    def __init__(self) -> None:
        self.calls: list = []

    def __call__(self, cfg, out, data) -> RunResult:
        self.calls.append(cfg)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.safetensors").write_bytes(b"weights")
        names = list(cfg.domains)
        adv = cfg.train.loss_weights.get("adv", 0.0)
        base = 0.7 - abs(adv - 0.05) + 0.001 * cfg.train.seed
        per = {d: {"rows": 10.0, "ctr": 0.2, "auc": base + 0.01 * k, "logloss": 0.4} for k, d in enumerate(names)}
        metrics = {
            "valid": {**per, "overall": per[names[0]]},
            "test": {**per, "overall": per[names[0]]},
            "fit_seconds": {"joint": 0.01},
            "best_epoch": {"joint": 1},
        }
        attention = {
            "groups": ["g1", "g2"],
            "domains": names,
            "attention_private": {
                "per_feature": np.full((len(names), 3), 0.5),
                "per_group": np.full((len(names), 2), 0.5),
            },
        }
        return RunResult(out, metrics, attention, StrategyResult({}, {}))


@pytest.fixture(scope="module")
def sim_yaml(tmp_path_factory) -> Path:
    return write_simulated_dataset(tmp_path_factory.mktemp("sim"), SimulatorConfig(rows=40_000))


@pytest.fixture(scope="module")
def sim_data(sim_yaml):
    return prepare(DatasetSchema.from_yaml(sim_yaml), sim_yaml.parent)


@pytest.fixture()
def restore_threads():
    """smoke.yaml trains with one torch thread (a process-wide setting): give the other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_end_to_end_smoke_on_simulated_data(tmp_path, sim_yaml, sim_data, restore_threads) -> None:
    exp = _subset(
        load_experiment("smoke"),
        {"table3": {"methods": ["self_train", "cnan_at"]}, "figure4": {"method": "cnan_at", "attention": "private"}},
        ["self_train", "cnan_at"],
    )
    out = tmp_path / "xp"
    summary = run_experiment(exp, sim_yaml, out, only=["table3"], data=sim_data, command="crossctr experiment test")
    assert (summary.planned, summary.trained) == (2, 2)
    records = [r.to_json() for r in ResultsFile(out / RESULTS_FILE).read()]
    assert [r["key"] for r in records] == ["self_train/all/s0", "cnan_at/all/s0"]
    for r in records:
        assert set(r["test"]) >= {"A", "B", "C"} and 0 < r["test"]["A"]["auc"] < 1
        assert r["parameters"] > 0 and r["train_seconds"] > 0 and r["crossctr_version"]
        assert r["config"]["train"]["seed"] == 0 and r["train_rows"]["A"] > r["train_rows"]["C"]
        run_dir = out / "runs" / r["key"].replace("/", "__")
        assert (run_dir / "metrics.json").is_file() and not (run_dir / "weights.safetensors").exists()
    att = records[1]["attention"]
    assert att["groups"] and np.array(att["private"]).shape == (3, len(att["groups"]))
    report = (out / "report.md").read_text()
    assert "CNAN-AT" in report and (out / "figure4.png").is_file()
    assert "Missing 2 run(s)" in report  # figure4's pair scenarios were not selected by --only


def _tuned_experiment() -> Experiment:
    cands = [{"train": {"loss_weights": {"adv": a}}} for a in (0.01, 0.05, 0.2)]
    return _subset(
        load_experiment("smoke"),
        {
            "table1": {"methods": ["deep_only", "dcn"]},
            "table3": {"methods": ["self_train", "cnan1", "cnan_at"]},
            "table4": {"baseline": "self_train", "method": "cnan_at", "fractions": [0.5, 1.0]},
        },
        ["deep_only", "dcn", "self_train", "cnan1", "cnan_at"],
        tune={"cnan_at": cands},
    )


def test_tuning_picks_the_best_validation_auc_and_uses_it_everywhere(tmp_path, tiny_data) -> None:
    exp = _tuned_experiment()
    fake = FakeTrain()
    out = tmp_path / "xp"
    summary = run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=fake)
    best = candidate_id(exp.tune["cnan_at"][1])  # adv = 0.05
    report = json.loads((out / "report.json").read_text())
    assert report["tuning"]["cnan_at"]["choice"] == best
    assert report["tuning"]["cnan_at"]["used_by"] == ["cnan1", "cnan_at"]
    records = _latest(out)
    tuned = [r for r in records.values() if r["method"] in ("cnan_at", "cnan1") and r["phase"] != "tune"]
    assert tuned and all(r["config"]["train"]["loss_weights"]["adv"] == 0.05 for r in tuned)
    # the chosen candidate's run is the all-domains seed-0 run: reused, not trained again;
    # Table 1's Deep & Cross is the Self-train run: reused too
    assert records["cnan_at/all/s0"]["reused_from"] == f"cnan_at/all/t-{best}/s0"
    # each run of a tuned method records the search space, the candidates' validation AUCs and the choice
    tuning = records["cnan1/all/s0"]["tuning"]
    assert tuning["method"] == "cnan_at" and tuning["choice"] == best and len(tuning["candidates"]) == 3
    assert records["cnan_at/all/s0"]["tuning"]["choice"] == best
    assert records["dcn/all/s0"]["reused_from"] == "self_train/all/s0"
    assert summary.reused == 2 and len(fake.calls) == summary.planned - 2
    # Table 4's target-only Self-train keeps only the target's metrics
    t4 = records["self_train/A+C/f0.5/s0"]
    assert set(t4["test"]) == {"C"} and t4["train_rows"]["C"] == round(0.5 * tiny_data.train.domain_counts(3)[2])


def test_rerun_is_resumable(tmp_path, tiny_data) -> None:
    exp = _tuned_experiment()
    out = tmp_path / "xp"
    first = FakeTrain()
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=first, render=False)
    path = out / RESULTS_FILE
    lines = path.read_text().splitlines()

    again = FakeTrain()
    summary = run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=again, render=False)
    assert again.calls == [] and summary.trained == 0 and path.read_text().splitlines() == lines

    # delete one trained line, and leave a half-written line as a killed run would
    victim = json.loads(lines[4])
    assert victim["reused_from"] is None
    path.write_text("\n".join(lines[:4] + lines[5:]) + "\n" + '{"key": "cnan_at/A+B')
    third = FakeTrain()
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=third, render=False)
    assert len(third.calls) == 1 and third.calls[0].train.seed == victim["seed"]
    assert set(ResultsFile(path).latest()) == {json.loads(line)["key"] for line in lines}

    # a changed setting changes the fingerprint: those runs are trained again
    doc = exp.model_dump(mode="json")
    doc["train"]["batch_size"] = 256
    fourth = FakeTrain()
    run_experiment(
        Experiment.model_validate(doc),
        "unused.yaml",
        out,
        data=tiny_data,
        train_fn=fourth,
        only=["table1"],
        render=False,
    )
    assert len(fourth.calls) == 2  # deep_only and self_train (dcn reuses the latter)


def test_dry_run_trains_and_writes_nothing(tmp_path, tiny_data) -> None:
    fake = FakeTrain()
    summary = run_experiment(
        _tuned_experiment(), "unused.yaml", tmp_path / "xp", data=tiny_data, train_fn=fake, dry_run=True
    )
    assert fake.calls == [] and not (tmp_path / "xp").exists()
    assert summary.planned == len([line for line in summary.listing if line.startswith("  todo")])


class SlowFake(FakeTrain):
    """FakeTrain that takes a moment, so runners sharing a folder interleave."""

    def __call__(self, cfg, out, data) -> RunResult:
        time.sleep(0.02)
        return super().__call__(cfg, out, data)


def _wait_for(cond, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_runners_sharing_a_folder_split_the_grid(tmp_path, tiny_data) -> None:
    exp, out = _tuned_experiment(), tmp_path / "xp"
    fakes = [SlowFake(), SlowFake()]
    threads = [
        threading.Thread(
            target=run_experiment,
            args=(exp, "unused.yaml", out),
            kwargs={"data": tiny_data, "train_fn": f, "render": False, "poll_seconds": 0.02},
        )
        for f in fakes
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    alone = FakeTrain()
    run_experiment(exp, "unused.yaml", tmp_path / "alone", data=tiny_data, train_fn=alone, render=False)
    lines = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    keys = [r["key"] for r in lines]
    # every run once, nothing trained twice, both runners did some of it, same records as one runner alone
    assert len(keys) == len(set(keys)) and set(keys) == set(ResultsFile(tmp_path / "alone" / RESULTS_FILE).latest())
    assert all(f.calls for f in fakes) and sum(len(f.calls) for f in fakes) == len(alone.calls)
    # no tuned run started before the choice was made: every one carries the chosen λ
    tuned = [r for r in lines if r["method"] in ("cnan_at", "cnan1") and r["phase"] != "tune"]
    assert tuned and all(r["config"]["train"]["loss_weights"]["adv"] == 0.05 for r in tuned)


def test_eta_counts_the_runners_holding_claims(tmp_path) -> None:
    others, done = Claims(tmp_path), Claims(tmp_path)
    other, finished = others.claim("a/all/s0"), done.claim("c/all/s0")
    finished.close()  # a finished run's claim file stays, unlocked
    me = Claims(tmp_path)
    with me.hold("b/all/s0") as mine:
        assert (
            mine and me.held == {"b/all/s0"} and not me.hold("b/all/s0").__enter__()
        )  # a held key cannot be held twice
        assert me.count_held_elsewhere() == 1 and me.held_elsewhere("a/all/s0") and not me.held_elsewhere("c/all/s0")
        other.close()
        assert me.count_held_elsewhere() == 0 and Claims(tmp_path / "none").count_held_elsewhere() == 0
    assert me.held == set() and not me.held_elsewhere("b/all/s0")  # released at the end of the block


def test_a_held_run_waits_and_a_dead_runners_claim_is_taken_over(tmp_path, tiny_data) -> None:
    """Another runner's claim (here: the test's) on a tuning run holds back the tuned method; released, it is done."""
    exp, out = _tuned_experiment(), tmp_path / "xp"
    plan_keys = run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain(), dry_run=True).listing
    tune_key = next(line.split()[1] for line in plan_keys if line.startswith("  todo") and "/t-" in line)
    held = Claims(out).claim(tune_key)
    assert held is not None
    dry = run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain(), dry_run=True).listing
    assert f"  busy  {tune_key}" in dry
    fake = FakeTrain()
    runner = threading.Thread(
        target=run_experiment,
        args=(exp, "unused.yaml", out),
        kwargs={"data": tiny_data, "train_fn": fake, "render": False, "poll_seconds": 0.02},
    )
    runner.start()
    try:
        untuned = {"deep_only", "dcn", "self_train"}
        _wait_for(
            lambda: {r["method"] for r in _latest(out).values() if r["phase"] != "tune"} >= untuned, "the untuned runs"
        )
        time.sleep(0.1)
        recorded = _latest(out)
        assert tune_key not in recorded and not any(
            r["method"] in ("cnan_at", "cnan1") and r["phase"] != "tune" for r in recorded.values()
        )
        assert runner.is_alive()  # waiting for the held tuning run
    finally:
        held.close()  # as when the holder dies: the lock goes with it
    runner.join(timeout=60)
    assert not runner.is_alive()
    recorded = _latest(out)
    assert tune_key in recorded and recorded["cnan_at/all/s0"]["tuning"]["choice"] == candidate_id(
        exp.tune["cnan_at"][1]
    )


def test_cli_dry_run(tmp_path, tiny_dataset_dir, monkeypatch) -> None:
    from crossctr.cli import cli

    # The dataset registry is another module's job: stand in for it with a pass-through.
    stub = types.ModuleType("crossctr.data.registry")
    stub.resolve_dataset = lambda name, cache_dir, data_root=None: Path(name)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "crossctr.data.registry", stub)
    dataset, out = str(tiny_dataset_dir / "dataset.yaml"), str(tmp_path / "xp")
    dry_run = ["experiment", "smoke", "--dataset", dataset, "--out", out, "--dry-run", "--only", "table1"]
    res = CliRunner().invoke(cli, dry_run)
    assert res.exit_code == 0, res.output
    assert "todo  deep_only/all/s0" in res.output and "2 runs planned" in res.output
    res = CliRunner().invoke(cli, [*dry_run, "--methods", "deep_only"])
    assert res.exit_code == 0, res.output
    assert "todo  deep_only/all/s0" in res.output and "dcn/all/s0" not in res.output and "1 runs planned" in res.output
    res = CliRunner().invoke(cli, ["experiment", "smoke", "--dataset", "x.yaml", "--seeds", "a,b"])
    assert res.exit_code != 0 and "comma-separated integers" in res.output


def test_cli_records_the_whole_grids_command_when_narrowed(tmp_path, tiny_dataset_dir, monkeypatch) -> None:
    """--only/--methods narrow one invocation; the report names the command that runs all of it."""
    from crossctr.cli import cli
    from crossctr.experiments import runner

    stub = types.ModuleType("crossctr.data.registry")
    stub.resolve_dataset = lambda name, cache_dir, data_root=None: Path(name)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "crossctr.data.registry", stub)
    seen: dict = {}

    def fake_run(exp, dataset_yaml, out, **kwargs):
        seen.update(kwargs)
        return runner.RunnerSummary(1, 0, 1, 0, 0.1, Path(out))

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    yaml = str(tiny_dataset_dir / "dataset.yaml")
    res = CliRunner().invoke(
        cli,
        [
            "experiment",
            "smoke",
            "--dataset",
            yaml,
            "--data-root",
            str(tmp_path),
            "--out",
            str(tmp_path / "xp"),
            "--only",
            "table1",
            "--methods",
            "deep_only",
            "--seeds",
            "0,1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert seen["only"] == ("table1",) and seen["methods"] == ("deep_only",)
    assert "--only" not in seen["command"] and "--methods" not in seen["command"]
    assert f"--data-root {tmp_path}" in seen["command"] and "--seeds 0,1" in seen["command"]
    res = CliRunner().invoke(cli, ["experiment", "smoke", "--dataset", yaml, "--publish", str(tmp_path / "pub")])
    assert res.exit_code != 0 and "--publish goes with --render-only" in res.output


def test_dry_run_marks_changed_settings_stale_and_unset_schema_fields_do_not(tmp_path, tiny_data) -> None:
    exp = _tuned_experiment()
    out = tmp_path / "xp"
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain(), only=["table1"], render=False)
    same = run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain(), only=["table1"], dry_run=True)
    assert same.done_before == same.planned and not any(line.startswith("  stale") for line in same.listing)

    doc = exp.model_dump(mode="json")
    doc["train"]["batch_size"] = 256
    changed = run_experiment(
        Experiment.model_validate(doc),
        "unused.yaml",
        out,
        data=tiny_data,
        train_fn=FakeTrain(),
        only=["table1"],
        dry_run=True,
    )
    assert changed.done_before == 0 and sum(line.startswith("  stale") for line in changed.listing) == changed.planned

    # An optional schema field left unset is not part of the identity, so adding such a field
    # to the schema later (its unset value keeping the old behaviour) keeps finished runs valid.
    from crossctr.experiments.runner import dataset_identity

    ident = dataset_identity(tiny_data)["schema"]
    assert all(None not in f.values() for f in ident["features"])
    assert {"name", "kind"} <= set(ident["features"][0])


def test_runs_recorded_under_another_tuning_choice_are_stale_in_listing_and_report(tmp_path, tiny_data) -> None:
    exp = _tuned_experiment()
    out = tmp_path / "xp"
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain())
    before = json.loads((out / "report.json").read_text())
    assert before["runs"]["stale"] == [] and not before["runs"]["missing"]
    # The tuning choice moves (as when candidates are rerun or the candidate list changes): the
    # CNAN-AT and CNAN₁ runs were trained with the old λ and no longer describe their cells.
    results = ResultsFile(out / RESULTS_FILE)
    other = candidate_id(exp.tune["cnan_at"][2])
    rec = next(r for r in results.latest().values() if r.phase == "tune" and r.candidate == other)
    results.append(rec.model_copy(update={"valid_mean_auc": 0.99}))
    listing = run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain(), dry_run=True).listing
    stale = {line.split()[1] for line in listing if line.startswith("  stale")}
    assert stale and {k.split("/")[0] for k in stale} == {"cnan_at", "cnan1"}
    from crossctr.experiments.render import render_report

    report = render_report(out)
    assert set(report.runs.stale) == stale
    assert set(report.runs.missing) == stale  # left out of the cells, not averaged in
    md = (out / "report.md").read_text()
    assert "made under other settings" in md
