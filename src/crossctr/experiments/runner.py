"""Run an experiment's grid, one finished run = one line of `<out>/results.jsonl`; resumable.

    prepare the dataset once -> expand the grid -> tuning runs -> search trials (search.py) ->
    choose each tuned or searched method's settings on validation AUC -> every other run,
    most informative first -> render.

A run is skipped when `results.jsonl` already holds a record with its key and fingerprint
(the hash of everything that decides its numbers), so a killed experiment resumes where it
stopped. A run whose fingerprint equals a finished run's (the Table 1 Deep & Cross and the
Self-train baseline; a tuned method's chosen candidate) is not trained again: its record is
copied under the new key with `reused_from`.

Each line is written whole, flushed and fsynced before the next run starts; a line cut short
by a crash is ignored when the file is read back.

Several runners may work on one folder at once: each run is claimed first (scheduler.py), so
the runners split the grid between them. A run whose tuning another runner is still doing
waits for it. The records are typed (records.py); the choice of a tuned method's settings is
read from them by choice.py, the same way render reads it.

Example:
    >>> run_experiment(load_experiment("smoke"), Path("data/dataset.yaml"), Path("runs/smoke"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import crossctr
from crossctr.data.dataset import PreparedData, prepare
from crossctr.evaluation.metrics import mean_auc
from crossctr.experiments.choice import choice_note, chosen_settings, stale_keys
from crossctr.experiments.grid import Experiment, Override, Plan, RunSpec, expand, subsample_domain
from crossctr.experiments.records import RESULTS_FILE, ResultsFile, RunRecord, SearchInfo, write_plan
from crossctr.experiments.scheduler import Claims, Progress, drain
from crossctr.experiments.search import recorded_trials, run_search
from crossctr.jsonsafe import finite
from crossctr.schema import DatasetSchema
from crossctr.training.run import RunConfig, RunResult, train_run

__all__ = ["RunnerSummary", "run_experiment", "dataset_identity", "plan_for"]

log = logging.getLogger(__name__)

TrainFn = Callable[[RunConfig, Path, PreparedData], RunResult]


def dataset_identity(data: PreparedData) -> dict[str, Any]:
    """What a record's numbers depend on in the data: the schema and the rows per split and domain."""
    n = data.schema.n_domains
    return {
        "name": data.schema.name,
        # Unset optional schema fields are left out, so a field added to the schema later
        # (defaulting to None, i.e. the old behaviour) does not orphan finished runs.
        "schema": data.schema.model_dump(mode="json", exclude={"path"}, exclude_none=True),
        "rows": {k: v.domain_counts(n) for k, v in data.splits.items()},
    }


@dataclass
class RunnerSummary:
    planned: int
    done_before: int
    trained: int
    reused: int
    seconds: float
    out: Path
    listing: list[str] = field(default_factory=list)  # the dry run's plan, one line per run


def _run_dir(out: Path, key: str) -> Path:
    return out / "runs" / key.replace("/", "__")


def _parameter_count(result: RunResult) -> int:
    members = getattr(getattr(result, "result", None), "members", {}) or {}
    return int(sum(p.numel() for m in members.values() for p in m.parameters()))


def _attention(att: dict[str, Any]) -> dict[str, Any] | None:
    """Per-group attention per domain of every attention kind ({groups, domains, shared, private})."""
    kinds = {
        k[len("attention_") :]: v["per_group"]
        for k, v in att.items()
        if k.startswith("attention_") and isinstance(v, dict)
    }
    if not kinds:
        return None
    return finite({"groups": att.get("groups"), "domains": att.get("domains"), **kinds})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Context:
    exp: Experiment
    data: PreparedData
    dataset_path: str
    dataset_id: dict[str, Any]
    out: Path
    results: ResultsFile
    keep_runs: bool
    progress: bool
    train_fn: TrainFn
    claims: Claims
    # tuned method -> the choice and every candidate, as its table runs record them
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)
    chosen: dict[str, Override] = field(default_factory=dict)  # tuned or searched method -> the settings chosen
    tally: Progress | None = None  # counts and durations of this invocation
    finished: Callable[[dict[str, RunRecord]], int] = lambda records: 0  # planned runs and trials the records hold

    def tuning(self, spec: RunSpec) -> dict[str, Any] | None:
        """What a tuned method's run records about the choice of its settings."""
        by = self.exp.tuned_by(spec.method)
        if by is None:
            return None
        if spec.phase == "tune":
            if by in self.exp.tune:
                return {"method": by, "space": [c.model_dump(mode="json") for c in self.exp.tune[by]]}
            s = self.exp.search
            assert s is not None
            space = {p: d.model_dump(mode="json", exclude_defaults=True) for p, d in self.exp.search_space(by).items()}
            return {"method": by, "space": space, "trials": s.trials, "sampler": s.sampler, "seed": s.seed}
        return {"method": by, **self.choices[by]}


def _record(
    ctx: _Context,
    spec: RunSpec,
    fingerprint: str,
    res: RunResult,
    seconds: float,
    train_rows: dict[str, int],
    search: SearchInfo | None = None,
) -> RunRecord:
    m = dict(res.metrics)
    if spec.target_only:
        # The target's own model also scored the other domain; those numbers belong to no method.
        m.update(
            {
                split: {spec.target: m[split][spec.target]}
                for split in ("valid", "test")
                if m.get(split) and spec.target in m[split]
            }
        )
    cfg = spec.run_config(ctx.exp, "")
    extra = (
        {"search": search.to_json()} if search is not None else {}
    )  # a search trial: its study, number(s) and settings
    return RunRecord.model_validate(
        finite(
            {
                "key": spec.key,
                "fingerprint": fingerprint,
                "experiment": ctx.exp.name,
                "dataset": ctx.dataset_id["name"],
                "method": spec.method,
                "label": ctx.exp.methods[spec.method].label,
                "phase": spec.phase,
                "scenario": spec.scenario,
                "domains": list(spec.domains),
                "seed": spec.seed,
                "fraction": spec.fraction,
                "target": spec.target,
                "target_only": spec.target_only,
                "candidate": spec.candidate,
                "params": spec.params.model_dump(mode="json") if spec.params is not None else None,
                "config": {
                    "model": cfg.model_dump(mode="json")["model"],
                    "strategy": cfg.strategy.model_dump(mode="json"),
                    "train": cfg.train.model_dump(mode="json", exclude={"progress"}),
                },
                "train_rows": train_rows,
                "valid": m.get("valid"),
                "test": m.get("test"),
                "valid_mean_auc": mean_auc(m["valid"]) if m.get("valid") else None,
                "best_epoch": m.get("best_epoch"),
                "attention": _attention(res.attention or {}),
                "parameters": _parameter_count(res),
                "train_seconds": float(sum((m.get("fit_seconds") or {}).values())),
                "epochs_run": {
                    k: len(f.history) for k, f in (res.result.fits.items() if res.result is not None else [])
                },
                "seconds": seconds,
                "crossctr_version": crossctr.__version__,
                "finished_at": _now(),
                "tuning": ctx.tuning(spec),
                **extra,
                "reused_from": None,
            }
        )
    )


def _train_one(ctx: _Context, spec: RunSpec, fingerprint: str, search: SearchInfo | None = None) -> RunRecord:
    data = ctx.data
    if spec.fraction < 1:
        assert spec.target is not None
        data = subsample_domain(data, spec.target, spec.fraction, spec.seed)
    cfg = spec.run_config(ctx.exp, ctx.dataset_path)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"progress": ctx.progress})})
    names = list(data.schema.domain.values)
    counts = data.train.domain_counts(len(names))
    train_rows = {d: counts[names.index(d)] for d in spec.domains}
    run_dir = _run_dir(ctx.out, spec.key)
    t0 = time.perf_counter()
    res = ctx.train_fn(cfg, run_dir, data)
    seconds = time.perf_counter() - t0
    record = _record(ctx, spec, fingerprint, res, seconds, train_rows, search)
    if not ctx.keep_runs:  # disk: metrics and attention stay in the record, configs and histories in the folder
        (run_dir / "weights.safetensors").unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)  # mid-training state, if train_run kept any
    return record


def _load_data(dataset_yaml: Path) -> PreparedData:
    schema = DatasetSchema.from_yaml(dataset_yaml)
    t0 = time.perf_counter()
    data = prepare(schema, dataset_yaml.parent)
    log.info(
        "dataset %s prepared in %.1f s: train rows per domain %s",
        schema.name,
        time.perf_counter() - t0,
        dict(zip(schema.domain.values, data.train.domain_counts(schema.n_domains), strict=False)),
    )
    return data


def plan_for(exp: Experiment, data: PreparedData, seeds: Iterable[int] | None) -> Plan:
    names = list(data.schema.domain.values)
    counts = data.train.domain_counts(len(names))
    return expand(exp, dict(zip(names, counts, strict=False)), None if seeds is None else tuple(seeds))


def run_experiment(
    exp: Experiment,
    dataset_yaml: str | Path,
    out: str | Path,
    *,
    seeds: Iterable[int] | None = None,
    only: Iterable[str] | None = None,
    methods: Iterable[str] | None = None,
    dry_run: bool = False,
    keep_runs: bool = False,
    progress: bool = False,
    command: str | None = None,
    data: PreparedData | None = None,
    train_fn: TrainFn = train_run,
    render: bool = True,
    poll_seconds: float = 15.0,
) -> RunnerSummary:
    """Run (or, with `dry_run`, list) every run of `exp` that `only`'s tables need, then render.

    `methods` narrows that to some methods (and the tuning runs that decide their settings).

    `data` skips reading the dataset (already prepared); `train_fn` replaces `train_run`
    (tests inject a fast, deterministic fake). When only runs that other runners hold are left,
    this one checks again every `poll_seconds` and returns once the grid is done.
    """
    t_start = time.perf_counter()
    out = Path(out)
    only = None if only is None else list(only)
    dataset_yaml = Path(dataset_yaml)
    if data is None:
        data = _load_data(dataset_yaml)
    full = plan_for(exp, data, seeds)
    plan = full.select(None if only is None else list(only), None if methods is None else list(methods), exp)
    results = ResultsFile(out / RESULTS_FILE)
    ctx = _Context(
        exp, data, str(dataset_yaml), dataset_identity(data), out, results, keep_runs, progress, train_fn, Claims(out)
    )
    records = results.latest()
    specs = plan.specs()
    n_trials = _search_budget(exp, plan)
    log.info(
        "experiment %s on %s: %d runs planned (%d tuning)%s, scenarios %s, seeds %s",
        exp.name,
        ctx.dataset_id["name"],
        len(specs),
        len(plan.tune),
        f" and {n_trials} search trials ({len(plan.search)} methods)" if plan.search else "",
        list(full.scenarios),
        list(full.seeds),
    )

    if dry_run:
        listing = _listing(ctx, plan, records)
        done = sum(line.startswith("  done") for line in listing)
        return RunnerSummary(len(specs) + n_trials, done, 0, 0, time.perf_counter() - t_start, out, listing)

    out.mkdir(parents=True, exist_ok=True)
    write_plan(out, exp, full, ctx.dataset_id["name"], only=only, command=command, dataset_id=ctx.dataset_id)
    keys = {s.key for s in specs}
    ctx.finished = lambda recs: len(keys & recs.keys()) + sum(len(recorded_trials(exp, m, recs)) for m in plan.search)
    ctx.tally = prog = Progress(len(specs) + n_trials)
    # Tuning runs, then searches (a str: a searched method), then every other run, in plan order.
    queue: list[RunSpec | str] = [*plan.tune, *plan.search, *plan.main]
    drain(
        queue,
        lambda item: _search(ctx, plan, item) if isinstance(item, str) else _run(ctx, plan, item),
        poll_seconds,
    )
    if render:
        from crossctr.experiments.render import render_report  # the runner's last step; render never imports the runner

        render_report(out, command=command)
    return RunnerSummary(
        prog.total,
        prog.counts["done"],
        prog.counts["trained"],
        prog.counts["reused"],
        time.perf_counter() - t_start,
        out,
    )


def _search_budget(exp: Experiment, plan: Plan) -> int:
    """Search trials planned: the same budget for every searched method."""
    return exp.search.trials * len(plan.search) if exp.search is not None else 0


def _run(ctx: _Context, plan: Plan, spec: RunSpec) -> bool:
    """Train `spec` (with its method's chosen settings) unless recorded; False while another runner holds it or its
    tuning."""
    chosen = _with_choice(ctx, plan, spec)
    if chosen is None:
        return False
    with ctx.claims.hold(chosen.key) as mine:
        if mine:
            _execute_claimed(ctx, chosen, chosen.fingerprint(ctx.exp, ctx.dataset_id), None)
        return mine


def _execute_claimed(ctx: _Context, spec: RunSpec, fp: str, search: SearchInfo | None) -> RunRecord:
    """Train `spec` unless results.jsonl holds it (or an identical run), under this runner's claim; return its record.

    `search`: a search trial's study, number(s) and settings, kept in its record.
    """
    prog, exp, results = ctx.tally, ctx.exp, ctx.results
    assert prog is not None
    records = results.latest()  # read under the claim: another runner may have just finished it
    i, total = prog.position(ctx.finished(records))
    old = records.get(spec.key)
    if old is not None and old.fingerprint == fp:
        prog.counts["done"] += 1
        return old
    if old is not None:
        log.warning(
            "%s: its settings changed since it was run (fingerprint %s -> %s); running it again",
            spec.key,
            old.fingerprint,
            fp,
        )
    same = next((r for r in records.values() if r.fingerprint == fp), None)
    if same is not None:
        doc = {k: v for k, v in same.to_json().items() if k != "search"}  # a search trial's record is its own
        doc.update(
            {
                "key": spec.key,
                "method": spec.method,
                "label": exp.methods[spec.method].label,
                "phase": spec.phase,
                "scenario": spec.scenario,
                "candidate": spec.candidate,
                "tuning": ctx.tuning(spec),
                "reused_from": same.key,
                "finished_at": _now(),
            }
        )
        if search is not None:
            doc["search"] = search.to_json()
        rec = RunRecord.model_validate(doc)
        results.append(rec)
        prog.counts["reused"] += 1
        log.info("[%d/%d] %s: same run as %s, record reused", i, total, spec.key, same.key)
        return rec
    # the runs no one has finished, shared among this runner and those holding a claim now
    eta = prog.eta(i, 1 + ctx.claims.count_held_elsewhere())
    log.info(
        "[%d/%d] %s: training (%s, seed %d%s)%s",
        i,
        total,
        spec.key,
        "+".join(spec.domains),
        spec.seed,
        f", {spec.target} at {spec.fraction:.0%}" if spec.fraction < 1 else "",
        eta,
    )
    record = _train_one(ctx, spec, fp, search)
    results.append(record)
    prog.durations.append(record.seconds)
    prog.counts["trained"] += 1
    log.info(
        "[%d/%d] %s: done in %.0f s, valid mean AUC %s",
        i,
        total,
        spec.key,
        record.seconds,
        "–" if record.valid_mean_auc is None else f"{record.valid_mean_auc:.4f}",
    )
    return record


def _search(ctx: _Context, plan: Plan, method: str) -> bool:
    """Run `method`'s search unless another runner is running it (False)."""
    with ctx.claims.hold(f"search/{method}") as mine:
        if mine:
            run_search(
                ctx.exp,
                plan,
                method,
                ctx.results.latest,
                lambda spec, info: _execute_claimed(ctx, spec, spec.fingerprint(ctx.exp, ctx.dataset_id), info),
                ctx.results.append,
            )
        return mine


def _with_choice(ctx: _Context, plan: Plan, spec: RunSpec) -> RunSpec | None:
    """`spec` with its method's tuned or searched settings; None while that tuning or search is still running
    elsewhere."""
    by = ctx.exp.tuned_by(spec.method)
    if spec.phase == "tune" or by is None:
        return spec
    if by not in ctx.choices:
        records = ctx.results.latest()
        info, params = chosen_settings(ctx.exp, records, plan, by)
        if info is None or params is None:
            if _tuning_unfinished(ctx, plan, by, records):
                return None
            what = (
                "no tuning candidate finished with a validation AUC"
                if by in ctx.exp.tune
                else "its search has not run all its trials, or none finished with a validation AUC"
            )
            raise RuntimeError(f"{by}: {what}; cannot choose its settings")
        ctx.choices[by] = choice_note(info)
        ctx.chosen[by] = params
        log.info("%s: chose candidate %s %s on validation AUC", by, info.choice, params.model_dump(mode="json"))
    return dataclasses.replace(spec, params=ctx.chosen[by])


def _tuning_unfinished(ctx: _Context, plan: Plan, by: str, records: dict[str, RunRecord]) -> bool:
    """Whether some of `by`'s planned tuning runs or search trials are not recorded yet (another runner holds them, or
    this one retries them); once all are, an undecided choice is an error."""
    if by in ctx.exp.tune:
        return any(s.key not in records for s in plan.tune if ctx.exp.tuned_by(s.method) == by)
    assert ctx.exp.search is not None
    return by in plan.search and len(recorded_trials(ctx.exp, by, records)) < ctx.exp.search.trials


def _listing(ctx: _Context, plan: Plan, records: dict[str, RunRecord]) -> list[str]:
    """The dry run's plan: per phase, each run's key and whether results.jsonl has it (`stale`: its settings changed;
    `busy`: another runner is training it)."""

    stale = stale_keys(ctx.exp, plan, records, ctx.dataset_id)

    def status(spec: RunSpec) -> str:
        if spec.key not in records:
            return "busy" if ctx.claims.held_elsewhere(spec.key) else "todo"
        return "stale" if spec.key in stale else "done"

    lines: list[str] = []
    by_phase: dict[str, list[RunSpec]] = {}
    for s in plan.specs():
        by_phase.setdefault(s.phase, []).append(s)
    for phase, specs in by_phase.items():
        marks = [(status(s), s.key) for s in specs]
        done = sum(m == "done" for m, _ in marks)
        lines.append(f"{phase}: {len(specs)} runs, {done} already in {RESULTS_FILE}")
        lines += [f"  {m:5s} {k}" for m, k in marks]
    after_tune = len(by_phase.get("tune", [])) + (1 if "tune" in by_phase else 0)
    lines[after_tune:after_tune] = _search_listing(ctx.exp, plan, records)
    return lines


def _search_listing(exp: Experiment, plan: Plan, records: dict[str, RunRecord]) -> list[str]:
    """The dry run's search trials: recorded ones by key, missing ones by
    number (Optuna proposes them when they run)."""
    lines: list[str] = []
    for method in plan.search:
        assert exp.search is not None
        trials = recorded_trials(exp, method, records)
        lines.append(
            f"search {method}: {exp.search.trials} trials ({exp.search.sampler}, "
            f"seed {exp.search.seed}), {len(trials)} already in {RESULTS_FILE}"
        )
        lines += [
            f"  done  {trials[n].key} (trial {n})"
            if n in trials
            else f"  todo  {method} trial {n} (settings proposed when it runs)"
            for n in range(exp.search.trials)
        ]
    return lines
