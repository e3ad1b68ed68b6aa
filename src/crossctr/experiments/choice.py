"""What the records decide: each tuned method's choice of settings, and which records no longer fit the plan.

The runner reads these to fill in a tuned method's settings before its table runs; render
reads them to print the choice and to leave out stale records. Both read the same records the
same way, so the report shows what the runner used.

Example:
    >>> info, params = chosen_settings(exp, ResultsFile(out / RESULTS_FILE).latest(), plan, "cnan_at")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from crossctr.experiments.grid import ALL, Experiment, Override, Plan, candidate_id, override_from, select_candidate
from crossctr.experiments.records import RunRecord, SearchSummary, TuningCandidate, TuningSummary
from crossctr.experiments.search import search_summary

__all__ = ["tuning_choices", "chosen_settings", "stale_keys"]

Records = Mapping[str, RunRecord]  # key -> its last record


def tuning_choices(exp: Experiment, records: Records, plan: Plan) -> dict[str, TuningSummary]:
    """method -> its candidates (id, params, valid_mean_auc) and the choice (None until all finished) from the tuning
    runs."""
    out: dict[str, TuningSummary] = {}
    for spec in plan.tune:
        users = [m for m in exp.methods if exp.tuned_by(m) == spec.method]
        entry = out.setdefault(
            spec.method, TuningSummary(seed=spec.seed, scenario=ALL, used_by=users, candidates=[], choice=None)
        )
        rec = records.get(spec.key)
        assert spec.params is not None
        entry.candidates.append(
            TuningCandidate(
                id=spec.candidate or "",
                params=spec.params.model_dump(mode="json"),
                valid_mean_auc=rec.valid_mean_auc if rec else None,
                done=rec is not None,
            )
        )
    for entry in out.values():
        if all(c.done for c in entry.candidates):
            entry.choice = select_candidate({c.id: c.valid_mean_auc for c in entry.candidates})
    return out


def chosen_settings(
    exp: Experiment, records: Records, plan: Plan, by: str
) -> tuple[TuningSummary | SearchSummary | None, Override | None]:
    """Method `by`'s tuning or search choice as the records stand: (its summary, its settings); settings None while
    undecided."""
    info: TuningSummary | SearchSummary | None
    info = tuning_choices(exp, records, plan).get(by) if by in exp.tune else search_summary(exp, records, plan).get(by)
    cid = info.choice if info else None
    if info is None or cid is None:
        return info, None
    if isinstance(info, SearchSummary):
        assert info.chosen_params is not None
        return info, override_from(info.chosen_params)
    return info, next(c for c in exp.tune[by] if candidate_id(c) == cid)


def choice_note(info: TuningSummary | SearchSummary) -> dict[str, Any]:
    """What a tuned method's table runs record of the choice: the chosen id and every candidate."""
    return {"choice": info.choice, "candidates": [c.to_json() for c in info.candidates]}


def stale_keys(exp: Experiment, plan: Plan, records: Records, dataset_id: Mapping[str, Any]) -> set[str]:
    """Keys of the plan's recorded runs whose settings differ from what the plan now asks for.

    A changed config, or a tuned method whose choice moved, leaves records that no longer
    describe their cell: the runner trains them again, the report must not average them in.
    Runs of a method whose tuning or search is undecided cannot be checked and are kept.
    """
    chosen: dict[str, Override | None] = {}
    stale = set()
    for spec in plan.specs():
        rec = records.get(spec.key)
        if rec is None:
            continue
        by = exp.tuned_by(spec.method)
        if spec.phase != "tune" and by is not None:
            if by not in chosen:
                chosen[by] = chosen_settings(exp, records, plan, by)[1]
            params = chosen[by]
            if params is None:
                continue
            spec = dataclasses.replace(spec, params=params)
        if rec.fingerprint != spec.fingerprint(exp, dataset_id):
            stale.add(spec.key)
    return stale
