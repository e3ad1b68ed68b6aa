"""The search: same budget per method, strict validation, resumable with the same proposals, choice used everywhere."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from crossctr.experiments.grid import Experiment, expand, load_experiment
from crossctr.experiments.records import RESULTS_FILE, ResultsFile
from crossctr.experiments.runner import run_experiment
from crossctr.models import REGISTRY
from crossctr.schema import ConfigError
from crossctr.training.run import RunResult
from crossctr.training.strategies import StrategyResult

SEARCH = {
    "trials": 6,
    "sampler": "tpe",
    "seed": 0,
    "startup_trials": 2,  # trials 2.. are modelled by TPE: they depend on the results before them
    "methods": "all",
    "space": {
        "default": {
            "train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "train.weight_decay": {"choices": [0.0, 1e-6, 1e-5]},
        },
        "cnan_at": {"train.loss_weights.adv": {"low": 0.005, "high": 0.3, "log": True}},
    },
}
TUNE = {"dann": [{"train": {"loss_weights": {"adv": a}}} for a in (0.01, 0.1)]}  # explicit candidates still work
METHODS = ("self_train", "dann", "cnan1", "cnan_at")  # searched: self_train, cnan_at; cnan1 follows cnan_at


def _experiment(
    search: dict | None = None, tune: dict | None = None, methods: tuple[str, ...] = METHODS, **over
) -> Experiment:
    doc = load_experiment("smoke").model_dump(mode="json")
    doc["methods"] = {m: doc["methods"][m] for m in methods}
    doc["tables"] = {"table3": {"methods": list(methods)}}
    doc["tune"] = TUNE if tune is None else tune
    doc["search"] = copy.deepcopy(SEARCH if search is None else search)
    doc.update(over)
    exp = Experiment.model_validate(doc)
    exp.check_configs("test")
    return exp


class Killed(Exception):
    """The runner's process dying mid-run."""


class FakeTrain:
    """Instant, deterministic stand-in for train_run: validation AUC peaks at lr 0.002, no weight decay, adv 0.05."""

    def __init__(self, die_at: int | None = None) -> None:
        self.calls: list = []
        self.die_at = die_at

    def __call__(self, cfg, out, data) -> RunResult:
        if self.die_at is not None and len(self.calls) == self.die_at:
            raise Killed
        self.calls.append(cfg)
        Path(out).mkdir(parents=True, exist_ok=True)
        t = cfg.train
        base = (
            0.8
            - 0.05 * math.log10(t.lr / 0.002) ** 2
            - 1000 * t.weight_decay
            - abs(t.loss_weights["adv"] - 0.05)
            + 0.001 * t.seed
        )
        names = list(cfg.domains)
        per = {d: {"rows": 10.0, "ctr": 0.2, "auc": base + 0.01 * k, "logloss": 0.4} for k, d in enumerate(names)}
        metrics = {
            "valid": {**per, "overall": per[names[0]]},
            "test": {**per, "overall": per[names[0]]},
            "fit_seconds": {"joint": 0.01},
            "best_epoch": {"joint": 1},
        }
        return RunResult(Path(out), metrics, {}, StrategyResult({}, {}))


def _trials(out: Path) -> dict[tuple[str, int], dict]:
    """(method, trial number) -> the settings it ran, from results.jsonl."""
    found = {}
    for rec in ResultsFile(out / RESULTS_FILE).latest().values():
        if rec.search is not None:
            for n in rec.search.trials:
                found[(rec.method, n)] = rec.search.params
    return found


def _invalid(search: dict, match: str, tune: dict | None = None, methods: tuple[str, ...] = METHODS) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        _experiment(search, tune=tune, methods=methods)


def test_invalid_searches_say_what_to_fix() -> None:
    space = SEARCH["space"]
    _invalid({**SEARCH, "methods": ["cnan_at", "nope"]}, r"search.methods names unknown method\(s\) \['nope'\]")
    _invalid({**SEARCH, "methods": ["dann"]}, "under both tune .* and search")
    _invalid({**SEARCH, "methods": ["cnan1"]}, "tune_from")
    _invalid({**SEARCH, "trials": 0}, "trials must be at least 1")
    _invalid({**SEARCH, "space": {"default": {}}}, r"empty space for \['self_train', 'cnan_at'\]")
    _invalid(
        {**SEARCH, "space": {**space, "dann": space["default"]}}, r"entries for \['dann'\], which are not searched"
    )
    _invalid(
        {**SEARCH, "space": {"default": {"lr": {"low": 0.001, "high": 0.01}}}},
        "'lr' is not a config path; write model.<key> or train.<key>",
    )
    # a path must name a setting of the method's config ...
    _invalid(
        {**SEARCH, "space": {"default": {"train.lrr": {"low": 0.001, "high": 0.01}}}},
        r"'lrr' is not a key of train .*keys there: \[.*'lr'",
    )
    _invalid(
        {**SEARCH, "space": {"default": {"train.loss_weights.advv": {"low": 0.01, "high": 0.1}}}},
        "'advv' is not a key of train.loss_weights",
    )
    _invalid(
        {**SEARCH, "space": {**space, "cnan_at": {"model.shared_dimm": {"choices": [4, 8]}}}},
        "'shared_dimm' is not a key of model for model 'cnan'",
    )
    # ... and every value it can take must give a valid config
    _invalid(
        {**SEARCH, "space": {"default": {"train.lr": {"low": 0.0, "high": 0.01}}}},
        r"train.lr' of method 'self_train' = 0.0.*\n.*lr",
    )
    _invalid({**SEARCH, "space": {"default": {"train.lr": {"low": 0.01, "high": 0.001}}}}, "low` must be below `high")
    _invalid(
        {**SEARCH, "space": {"default": {"train.lr": {"low": 0.0, "high": 0.01, "log": True}}}},
        "log range needs low > 0",
    )
    _invalid(
        {**SEARCH, "space": {"default": {"train.lr": {"low": 0.001, "high": 0.01, "choices": [0.001]}}}}, "not both"
    )
    _invalid({**SEARCH, "sampler": "grid"}, "sampler")
    # a method may be tuned with explicit candidates or searched, not both; tune_from may follow a searched method
    assert _experiment().tuned_by("cnan1") == "cnan_at" and _experiment().searched == ("self_train", "cnan_at")


def test_yaml_numbers_without_a_dot_are_caught(tmp_path) -> None:
    doc = _experiment().model_dump(mode="json")
    text = yaml.safe_dump(doc).replace("- 1.0e-05", "- 1e-5")  # how a user would type it; YAML reads it as text
    assert "- 1e-5" in text
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="write it as 1.0e-5"):
        load_experiment(path)


def test_every_searched_method_gets_the_same_budget(tmp_path, tiny_data) -> None:
    exp = _experiment()
    plan = expand(exp, {"A": 900, "B": 90, "C": 9})
    assert plan.search == {"self_train": frozenset({"table3"}), "cnan_at": frozenset({"table3"})}
    out = tmp_path / "xp"
    fake = FakeTrain()
    summary = run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=fake)
    trials = _trials(out)
    assert sorted(trials) == sorted((m, n) for m in ("self_train", "cnan_at") for n in range(6))
    records = {k: r.to_json() for k, r in ResultsFile(out / RESULTS_FILE).latest().items()}
    tune = [r for r in records.values() if r["phase"] == "tune"]
    assert len(tune) == 2 + 2 * 6 and all(r["seed"] == exp.tune_seed and r["domains"] == ["A", "B", "C"] for r in tune)
    # each trial's record holds its settings, in its config too
    for r in tune:
        if r.get("search"):
            assert r["config"]["train"]["lr"] == r["search"]["params"]["train.lr"]
            assert r["tuning"] == {
                "method": r["method"],
                "space": json.loads(json.dumps(r["tuning"]["space"])),
                "trials": 6,
                "sampler": "tpe",
                "seed": 0,
            }
    assert (
        "train.loss_weights.adv" in trials[("cnan_at", 0)] and "train.loss_weights.adv" not in trials[("self_train", 0)]
    )
    # 2 dann candidates + 12 trials + cnan1 (the other table runs reuse the chosen trial's run)
    assert summary.planned == 2 + 12 + 4 and len(fake.calls) == 2 + 12 + 1 and summary.reused == 3


def test_a_killed_search_resumes_with_the_proposals_of_an_uninterrupted_one(tmp_path, tiny_data) -> None:
    exp = _experiment()
    whole = FakeTrain()
    run_experiment(exp, "unused.yaml", tmp_path / "whole", data=tiny_data, train_fn=whole, render=False)

    # killed while training self_train's trial 4 (2 dann candidates and trials 0-3 are recorded)
    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain(die_at=6), render=False)
    assert sorted(n for m, n in _trials(out) if m == "self_train") == [0, 1, 2, 3]
    dry = run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain(), dry_run=True)
    assert "  todo  self_train trial 4 (settings proposed when it runs)" in dry.listing
    assert sum(line.startswith("  done") for line in dry.listing) == 2 + 4

    again = FakeTrain()
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=again, render=False)
    assert len(again.calls) == len(whole.calls) - 6  # only what the kill left undone
    assert _trials(out) == _trials(tmp_path / "whole")  # same settings for every trial, TPE's included
    a, b = (
        {k: r.to_json() for k, r in ResultsFile(p / RESULTS_FILE).latest().items()} for p in (out, tmp_path / "whole")
    )
    assert sorted(a) == sorted(b) and all(a[k]["fingerprint"] == b[k]["fingerprint"] for k in a)
    # another seed proposes other settings
    other = tmp_path / "other"
    run_experiment(
        _experiment({**SEARCH, "seed": 1}), "unused.yaml", other, data=tiny_data, train_fn=FakeTrain(), render=False
    )
    assert _trials(other)[("self_train", 0)] != _trials(out)[("self_train", 0)]


def test_the_best_trial_is_chosen_and_used_by_every_table_run(tmp_path, tiny_data) -> None:
    exp = _experiment()
    out = tmp_path / "xp"
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain())
    records = {k: r.to_json() for k, r in ResultsFile(out / RESULTS_FILE).latest().items()}
    report = json.loads((out / "report.json").read_text())
    for method, users in (("self_train", ["self_train"]), ("cnan_at", ["cnan1", "cnan_at"])):
        trials = [r for r in records.values() if r["phase"] == "tune" and r["method"] == method]
        best = max(trials, key=lambda r: r["valid_mean_auc"])
        info = report["search"][method]
        assert info["choice"] == best["candidate"] and info["chosen_params"] == best["search"]["params"]
        assert info["used_by"] == users
        for user in users:
            rec = records[f"{user}/all/s0"]
            assert rec["config"]["train"]["lr"] == best["search"]["params"]["train.lr"]
            assert rec["config"]["train"]["weight_decay"] == best["search"]["params"]["train.weight_decay"]
            assert (
                rec["tuning"]["method"] == method
                and rec["tuning"]["choice"] == best["candidate"]
                and len(rec["tuning"]["candidates"]) == 6
            )
        # the chosen trial is the seed-0 all-domains run: reused, not trained again
        assert records[f"{method}/all/s0"]["reused_from"] == best["key"]
        assert "search" not in records[f"{method}/all/s0"]
    assert (
        records["cnan1/all/s0"]["config"]["train"]["loss_weights"]["adv"]
        == report["search"]["cnan_at"]["chosen_params"]["train.loss_weights.adv"]
    )
    assert report["tuning"]["dann"]["choice"] is not None  # explicit candidates still chosen as before


def test_the_report_lists_space_budget_and_every_trial(tmp_path, tiny_data) -> None:
    exp = _experiment()
    out = tmp_path / "xp"
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain())
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    info = report["search"]["cnan_at"]
    assert (info["trials"], info["sampler"], info["seed"], info["startup_trials"], info["done"]) == (6, "tpe", 0, 2, 6)
    assert info["space"] == {
        "train.loss_weights.adv": {"low": 0.005, "high": 0.3, "log": True},
        "train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "train.weight_decay": {"choices": [0.0, 1e-6, 1e-5]},
    }
    assert [c["trial"] for c in info["candidates"]] == list(range(6)) and all(
        c["valid_mean_auc"] for c in info["candidates"]
    )
    assert (
        "## Hyper-parameter search on validation" in md
        and "6 trials proposed by Optuna's TPE sampler (2 random trials first), seed 0" in md
    )
    assert (
        "| `train.lr` | [0.0001, 0.01] log scale |" in md and "| `train.weight_decay` | one of 0, 1e-06, 1e-05 |" in md
    )
    assert "Its choice is also used by: `cnan1`." in md
    for c in info["candidates"]:
        assert f"| {c['trial']} | {c['id']} | {c['params']['train.loss_weights.adv']:.4g} |" in md
    assert f"| {info['choice']} |" in md and md.count("| chosen |") == 3  # self_train, cnan_at and dann's candidates

    # half a search: the trials so far, and no choice yet
    partial = tmp_path / "partial"
    with pytest.raises(Killed):
        run_experiment(exp, "unused.yaml", partial, data=tiny_data, train_fn=FakeTrain(die_at=4))
    from crossctr.experiments.render import render_report

    report = render_report(partial)
    assert (
        report.search is not None
        and report.search["self_train"].done == 2
        and report.search["self_train"].choice is None
    )
    assert "2 of 6 trials have finished: no choice yet." in (partial / "report.md").read_text()


def test_repeated_settings_are_one_run_listing_every_trial(tmp_path, tiny_data) -> None:
    search = {
        "trials": 5,
        "sampler": "random",
        "seed": 0,
        "methods": ["self_train"],
        "space": {"default": {"train.weight_decay": {"choices": [0.0, 1e-5]}}},
    }
    exp = _experiment(search, tune={}, methods=("self_train",))
    out = tmp_path / "xp"
    fake = FakeTrain()
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=fake, render=False)
    trials = _trials(out)
    assert sorted(trials) == [("self_train", n) for n in range(5)]
    assert len(fake.calls) == len({json.dumps(p) for p in trials.values()}) <= 2  # each distinct setting trained once
    again = FakeTrain()
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=again, render=False)
    assert again.calls == []


def test_raising_the_budget_keeps_the_trials_already_run(tmp_path, tiny_data) -> None:
    out = tmp_path / "xp"
    run_experiment(
        _experiment({**SEARCH, "trials": 3}), "unused.yaml", out, data=tiny_data, train_fn=FakeTrain(), render=False
    )
    more = FakeTrain()
    run_experiment(_experiment(), "unused.yaml", out, data=tiny_data, train_fn=more, render=False)
    # the 3 new trials of each method; the table runs follow the (maybe new) choice
    assert sum(1 for c in more.calls if c.train.seed == 0) >= 2 * 3
    assert sorted(n for m, n in _trials(out) if m == "cnan_at") == list(range(6))


@pytest.mark.skipif(
    not {"shared_bottom", "mmoe", "ple", "star", "epnet"} <= set(REGISTRY),
    reason="the multi-domain models are not registered yet",
)
def test_modern_experiment_searches_every_method_with_the_same_budget() -> None:
    exp = load_experiment("modern")
    plan = expand(exp, {"18-44": 600_000, "45+": 150_000, "under-18": 20_000})
    methods = ["cnan_at", "self_train", "joint_dcn", "shared_bottom", "mmoe", "ple", "star", "epnet"]
    assert list(plan.search) == methods and exp.search is not None and exp.search.trials == 8
    assert {s.phase for s in plan.main} == {"table3"} and len(plan.main) == len(methods) * 3 and not plan.tune
    assert all({"train.lr", "train.weight_decay"} <= set(exp.search_space(m)) for m in methods)
    assert "train.loss_weights.adv" in exp.search_space("cnan_at")
    assert np.isclose(exp.train["lr"], 0.001) and exp.seeds == (0, 1, 2)


def test_every_method_sees_the_same_values_of_the_shared_dimensions(tmp_path, tiny_data) -> None:
    exp = _experiment()  # cnan_at's space has one more dimension than self_train's
    out = tmp_path / "xp"
    run_experiment(exp, "unused.yaml", out, data=tiny_data, train_fn=FakeTrain(), render=False)
    trials = _trials(out)
    for n in range(6):
        a, b = trials[("self_train", n)], trials[("cnan_at", n)]
        assert a["train.lr"] == b["train.lr"] and a["train.weight_decay"] == b["train.weight_decay"]
    assert len({trials[("cnan_at", n)]["train.lr"] for n in range(6)}) == 6  # but they vary over trials
    assert (
        len({trials[("cnan_at", n)]["train.loss_weights.adv"] for n in range(6)}) > 1
    )  # its own dimension is searched
