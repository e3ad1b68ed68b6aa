"""Hyper-parameter search with Optuna: the same trial budget for every searched method.

For each searched method the runner asks an Optuna study for `search.trials` settings, one at
a time (ask/tell), and runs each as a tuning run: all domains, seed `tune_seed`, judged by the
mean validation AUC over domains. Every trial is one record of results.jsonl whose `search`
field holds the study's identity, the trial number(s) and the settings as dotted paths:

    {"key": "mmoe/all/t-3f2a1c/s0", "phase": "tune", "valid_mean_auc": 0.79,
     "search": {"study": "9c0d...", "trials": [2], "params": {"train.lr": 0.0012, ...}}}

A killed search resumes: the study is rebuilt from the recorded trials (`add_trial`) and only
the missing trials are asked for. The sampler is seeded afresh for each trial from
(search.seed, trial number), so a proposal depends only on the seed, the trial number and the
trials before it: a resumed search proposes what an uninterrupted one would have. The method
is not part of that seed, so methods with the same space get the same random trials (common
random numbers: no method is luckier in its draws); TPE's later trials follow each method's
own results. Two trials with the same settings are one run (same key): its record lists both
trial numbers.

The dimensions every method shares (`space.default`) are not left to each method's sampler:
trial n of every method takes the same values for them, drawn from (search.seed, n) alone, and
the sampler proposes only the method's own dimensions (`study.enqueue_trial` fixes the shared
ones). So all methods see the same learning rates whatever else their space holds: a method
with two more dimensions no longer draws other learning rates than the rest.

The best trial (ties: the earliest) becomes the method's settings for all its table runs.

Example:
    >>> summary = search_summary(exp, ResultsFile(out / RESULTS_FILE).latest(), plan)  # doctest: +SKIP
    >>> summary["mmoe"].choice, summary["mmoe"].chosen_params  # doctest: +SKIP
    ('3f2a1c', {'train.lr': 0.0012, 'train.weight_decay': 1e-06})
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from crossctr.experiments.grid import (
    ALL,
    DEFAULT_SPACE,
    Experiment,
    Param,
    Plan,
    RunSpec,
    search_spec,
    select_candidate,
)
from crossctr.experiments.records import RunRecord, SearchCandidate, SearchInfo, SearchSummary

if TYPE_CHECKING:
    import optuna

__all__ = ["study_id", "recorded_trials", "run_search", "search_summary", "shared_space", "shared_values"]

log = logging.getLogger(__name__)

# Runs a trial's spec (or finds its finished record) and returns the record in results.jsonl.
Execute = Callable[[RunSpec, SearchInfo], RunRecord]


def study_id(exp: Experiment, method: str) -> str:
    """What decides a method's proposals besides the results: its space, the sampler and its seed.

    The budget is left out, so raising `trials` keeps the trials already run.
    """
    s = exp.search
    assert s is not None
    blob = {
        "space": {p: d.model_dump(mode="json") for p, d in exp.search_space(method).items()},
        "shared": sorted(shared_space(exp, method)),  # drawn the same for every method
        "sampler": s.sampler,
        "seed": s.seed,
        "startup": s.startup if s.sampler == "tpe" else None,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def recorded_trials(exp: Experiment, method: str, records: Mapping[str, RunRecord]) -> dict[int, RunRecord]:
    """Trial number -> its record, for `method`'s current study (trials beyond the budget left out)."""
    sid, budget = study_id(exp, method), _budget(exp)
    out: dict[int, RunRecord] = {}
    for rec in records.values():
        info = rec.search
        if rec.phase != "tune" or rec.method != method or info is None or info.study != sid:
            continue
        for n in info.trials:
            if n < budget:
                out[n] = rec
    return dict(sorted(out.items()))


def _budget(exp: Experiment) -> int:
    assert exp.search is not None
    return exp.search.trials


def _distributions(space: Mapping[str, Param]) -> dict[str, optuna.distributions.BaseDistribution]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for path, p in space.items():
        if p.choices is not None:
            out[path] = CategoricalDistribution(p.choices)
        elif p.integer:
            assert p.low is not None and p.high is not None
            out[path] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            assert p.low is not None and p.high is not None
            out[path] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def _sampler(exp: Experiment, trial: int) -> optuna.samplers.BaseSampler:
    """A sampler seeded for this trial alone, so a resumed study proposes what an uninterrupted one would."""
    from optuna.samplers import RandomSampler, TPESampler

    s = exp.search
    assert s is not None
    seed = int(np.random.SeedSequence([s.seed, trial]).generate_state(1)[0])
    if s.sampler == "random":
        return RandomSampler(seed=seed)
    return TPESampler(seed=seed, n_startup_trials=s.startup)


def shared_space(exp: Experiment, method: str) -> dict[str, Param]:
    """The dimensions `method` shares with every other method: `space.default`, where the method does not redefine
    them."""
    assert exp.search is not None
    default = exp.search.space.get(DEFAULT_SPACE, {})
    own = exp.search.space.get(method, {})
    return {p: d for p, d in sorted(default.items()) if p not in own}


def shared_values(exp: Experiment, method: str, trial: int) -> dict[str, Any]:
    """Trial `trial`'s values of the shared dimensions: a function of (search.seed, trial) only.

    Example:
        >>> shared_values(exp, "mmoe", 3) == shared_values(exp, "cnan_at", 3)  # doctest: +SKIP
        True
    """
    import optuna
    from optuna.samplers import RandomSampler

    s = exp.search
    assert s is not None
    space = shared_space(exp, method)
    if not space:
        return {}
    seed = int(np.random.SeedSequence([s.seed, trial, 1]).generate_state(1)[0])
    study = optuna.create_study(sampler=RandomSampler(seed=seed))
    return dict(study.ask(_distributions(space)).params)


def _value(rec: RunRecord) -> float | None:
    auc = rec.valid_mean_auc
    return None if auc is None or math.isnan(auc) else float(auc)


def run_search(
    exp: Experiment,
    plan: Plan,
    method: str,
    records: Callable[[], Mapping[str, RunRecord]],
    execute: Execute,
    append: Callable[[RunRecord], None],
) -> None:
    """Run `method`'s missing trials; recorded ones are added to the study as they are.

    `records` reads results.jsonl (key -> last record); `execute(spec, search_info)` trains the
    spec or returns its finished record; `append` writes a record.
    """
    import optuna

    sid, budget = study_id(exp, method), _budget(exp)
    dists = _distributions(exp.search_space(method))
    done = recorded_trials(exp, method, records())
    log.info("%s: search of %d trials, %d already in results (study %s)", method, budget, len(done), sid)
    # Optuna prints its own INFO lines to stderr; this module logs each trial itself.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize", study_name=f"{exp.name}/{method}")
        _run_trials(exp, plan, method, study, dists, done, execute, append)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run_trials(
    exp: Experiment,
    plan: Plan,
    method: str,
    study: optuna.Study,
    dists: dict[str, Any],
    done: dict[int, RunRecord],
    execute: Execute,
    append: Callable[[RunRecord], None],
) -> None:
    from optuna.trial import TrialState, create_trial

    sid, budget = study_id(exp, method), _budget(exp)
    for n in range(budget):
        rec = done.get(n)
        if rec is not None:
            assert rec.search is not None
            values = rec.search.params
            # its settings may have changed since (epochs, ...): execute reruns a stale record
            rec = _trial_record(
                execute(search_spec(exp, plan, method, values, n), _info(sid, [n], values)), sid, n, values, append
            )
            value = _value(rec)
            study.add_trial(
                create_trial(
                    params=values,
                    distributions=dists,
                    value=value,
                    state=TrialState.COMPLETE if value is not None else TrialState.FAIL,
                )
            )
            continue
        study.sampler = _sampler(exp, n)
        study.enqueue_trial(shared_values(exp, method, n))  # the shared dimensions: the same for every method
        trial = study.ask(dists)
        values = dict(trial.params)
        spec = search_spec(exp, plan, method, values, n)
        log.info("%s: search trial %d of %d: %s", method, n + 1, budget, values)
        rec = _trial_record(execute(spec, _info(sid, [n], values)), sid, n, values, append)
        value = _value(rec)
        if value is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)


def _info(sid: str, trials: list[int], values: Mapping[str, Any]) -> SearchInfo:
    return SearchInfo(study=sid, trials=trials, params=dict(values))


def _trial_record(
    rec: RunRecord, sid: str, n: int, values: Mapping[str, Any], append: Callable[[RunRecord], None]
) -> RunRecord:
    """Make sure the record of trial `n` says so: a repeated setting is one
    run listing every trial that asked for it."""
    info = rec.search
    if info is not None and info.study == sid and n in info.trials:
        return rec
    trials = sorted({*info.trials, n}) if info is not None and info.study == sid else [n]
    rec = rec.model_copy(update={"search": _info(sid, trials, values)})
    append(rec)
    return rec


def search_summary(exp: Experiment, records: Mapping[str, RunRecord], plan: Plan) -> dict[str, SearchSummary]:
    """method -> the space, budget, sampler, seed, every recorded trial and the choice (None until all trials ran)."""
    s = exp.search
    out: dict[str, SearchSummary] = {}
    if s is None:
        return out
    for method in plan.search:
        trials = recorded_trials(exp, method, records)
        cands = [
            SearchCandidate(
                trial=n,
                id=r.candidate or "",
                params=r.search.params if r.search else {},
                valid_mean_auc=r.valid_mean_auc,
            )
            for n, r in trials.items()
        ]
        complete = len(trials) == s.trials
        choice = select_candidate({c.id: c.valid_mean_auc for c in cands}) if complete else None
        out[method] = SearchSummary(
            space={p: d.model_dump(mode="json", exclude_defaults=True) for p, d in exp.search_space(method).items()},
            trials=s.trials,
            sampler=s.sampler,
            seed=s.seed,
            startup_trials=s.startup if s.sampler == "tpe" else None,
            study=study_id(exp, method),
            tune_seed=exp.tune_seed,
            scenario=ALL,
            used_by=[m for m in exp.methods if exp.tuned_by(m) == method],
            done=len(trials),
            candidates=cands,
            choice=choice,
            chosen_params=next((c.params for c in cands if c.id == choice), None),
        )
    return out
