"""What an experiment folder holds, typed: one `RunRecord` per line of results.jsonl, plan.json, report.json.

    results.jsonl  RunRecord per finished run (append-only; the last record of a key wins)
    plan.json      PlanFile: the experiment, the dataset's identity, every planned run
    report.json    Report: the tables' numbers, the tuning and search choices, the run counts

The runner writes records, render reads them; neither imports the other. Every results.jsonl
ever written parses: fields added later (`epochs_run`) default to None, and a record is
written back with exactly the fields it was read with (`exclude_unset`), so a copied old
record keeps its shape.

Example:
    >>> records = ResultsFile(Path("runs/experiments/paper-simulator") / RESULTS_FILE).latest()  # doctest: +SKIP
    >>> records["cnan_at/all/s0"].test["A"].auc  # doctest: +SKIP
    0.7541
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

import crossctr
from crossctr.experiments.grid import Experiment, Override, Plan, expand
from crossctr.inference import atomic_write
from crossctr.jsonsafe import json_default

__all__ = [
    "RESULTS_FILE",
    "PLAN_FILE",
    "DomainMetrics",
    "Attention",
    "SearchInfo",
    "RecordedConfig",
    "RunRecord",
    "ResultsFile",
    "PlanFile",
    "write_plan",
    "read_plan",
    "TuningCandidate",
    "TuningSummary",
    "SearchCandidate",
    "SearchSummary",
    "CellStats",
    "Table4Report",
    "AttentionBlock",
    "Figure4Report",
    "CostRow",
    "TableCount",
    "RunCounts",
    "Report",
]

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
PLAN_FILE = "plan.json"


class _Record(BaseModel):
    """A JSON document of the experiment folder: unknown keys are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """The fields it was built or read with (an old record keeps its shape), JSON types only."""
        return self.model_dump(mode="json", exclude_unset=True)


# --- results.jsonl -------------------------------------------------------------------------------


class DomainMetrics(_Record):
    """One domain's (or `overall`) metrics on a split; None where undefined (one class only)."""

    rows: float | None = None
    ctr: float | None = None
    auc: float | None = None
    logloss: float | None = None


Split = dict[str, DomainMetrics]  # domain (and "overall") -> metrics


class Attention(_Record):
    """Mean attention per feature group, one row per domain of the run; None where undefined."""

    groups: list[str] | None = None
    domains: list[str] | None = None
    shared: list[list[float | None]] | None = None
    private: list[list[float | None]] | None = None


class SearchInfo(_Record):
    """A search trial's study, the trial number(s) that asked for these settings and the settings (dotted paths)."""

    study: str
    trials: list[int]
    params: dict[str, Any]


class RecordedConfig(_Record):
    """The run's model config, strategy and train config as the run used them."""

    model: dict[str, Any]
    strategy: dict[str, Any]
    train: dict[str, Any]


class RunRecord(_Record):
    """One finished run: what it was (key, settings, fingerprint) and what it measured."""

    key: str  # grid.py's stable key: <method>/<scenario>[/f<fraction>][/t-<candidate>]/s<seed>
    fingerprint: str  # hash of everything that decides the numbers (RunSpec.fingerprint)
    experiment: str
    dataset: str
    method: str
    label: str
    phase: str  # grid.PHASES
    scenario: str
    domains: list[str]
    seed: int
    fraction: float = 1.0
    target: str | None = None
    target_only: bool = False
    candidate: str | None = None
    params: Override | None = None  # the overrides in force (a tuning candidate, the tuned choice)
    config: RecordedConfig
    train_rows: dict[str, int]
    valid: Split | None = None
    test: Split | None = None
    valid_mean_auc: float | None = None
    best_epoch: dict[str, int] | None = None  # fit name -> best epoch
    attention: Attention | None = None
    parameters: int = 0
    train_seconds: float = 0.0
    epochs_run: dict[str, int] | None = None  # fit name -> epochs run; absent in records made before it was kept
    seconds: float = 0.0
    crossctr_version: str | None = None
    finished_at: str | None = None
    tuning: dict[str, Any] | None = None  # how a tuned method's settings were chosen (space, candidates, choice)
    search: SearchInfo | None = None  # a search trial only
    reused_from: str | None = None  # key of the identical run whose numbers these are

    def auc(self, split: Literal["valid", "test"], domain: str) -> float | None:
        metrics = (self.valid if split == "valid" else self.test) or {}
        m = metrics.get(domain)
        return None if m is None else m.auc


class ResultsFile:
    """Append-only JSON-lines file of finished runs; the last record of a key wins."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> list[RunRecord]:
        if not self.path.is_file():
            return []
        records = []
        for i, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(RunRecord.model_validate_json(line))
            except ValidationError as e:
                if any(err["type"] == "json_invalid" for err in e.errors()):
                    log.warning("%s line %d is not valid JSON (a run cut short?); ignored", self.path, i)
                else:
                    log.warning("%s line %d is not a run record (%s); ignored", self.path, i, e.errors()[0]["msg"])
        return records

    def latest(self) -> dict[str, RunRecord]:
        """key -> its last record."""
        return {r.key: r for r in self.read()}

    def append(self, record: RunRecord) -> None:
        line = json.dumps(record.to_json(), allow_nan=False, default=json_default) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # runners sharing the folder append whole lines, one at a time
            if f.tell() > 0 and not _ends_with_newline(self.path):
                f.write(b"\n")  # a half-written line from a crash stays on its own line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


# --- plan.json -----------------------------------------------------------------------------------


class PlannedRun(_Record):
    key: str
    phase: str
    tables: list[str]


class PlanLayout(_Record):
    """Plan.to_json(): the dataset's domains and scenarios and every planned run."""

    domains: list[str]
    sizes: dict[str, int]
    rich: str
    smallest: str
    scenarios: dict[str, list[str]]
    seeds: list[int]
    runs: list[PlannedRun]
    search: dict[str, list[str]] | None = None


class PlanFile(_Record):
    """`<out>/plan.json`: what render needs besides the results."""

    experiment: dict[str, Any]  # Experiment.model_dump(mode="json")
    dataset: str
    dataset_id: dict[str, Any] | None = None  # the data's identity in fingerprints; None: stale runs are not checked
    plan: PlanLayout
    only: list[str] | None = None
    command: str | None = None
    crossctr_version: str | None = None

    def rebuild(self) -> tuple[Experiment, Plan]:
        """The experiment and its plan as the runner had them: tuning, search and main runs expanded afresh."""
        exp = Experiment.model_validate(self.experiment)
        p = self.plan
        full = expand(exp, p.sizes, tuple(p.seeds))
        plan = Plan(
            tuple(p.domains), p.sizes, p.rich, p.smallest, {k: tuple(v) for k, v in p.scenarios.items()}, tuple(p.seeds)
        )
        plan.tune, plan.search, plan.main = full.tune, full.search, full.main
        return exp, plan


def write_plan(
    out: Path,
    exp: Experiment,
    plan: Plan,
    dataset: str,
    only: Iterable[str] | None = None,
    command: str | None = None,
    dataset_id: Mapping[str, Any] | None = None,
) -> None:
    """`<out>/plan.json`: what render needs besides the results (the experiment, domains, every planned run).

    `dataset_id` (the data's identity in run fingerprints) lets the report leave out runs
    recorded under other settings.
    """
    atomic_write(
        Path(out) / PLAN_FILE,
        json.dumps(
            {
                "experiment": exp.model_dump(mode="json"),
                "dataset": dataset,
                "dataset_id": None if dataset_id is None else dict(dataset_id),
                "plan": plan.to_json(),
                "only": None if only is None else sorted(only),
                "command": command,
                "crossctr_version": crossctr.__version__,
            },
            indent=2,
        ).encode(),
    )


def read_plan(out: Path) -> PlanFile | None:
    """`<out>/plan.json`, or None when there is none."""
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        return None
    return PlanFile.model_validate_json(path.read_text())


# --- tuning and search choices (in records and report.json) -------------------------------------


class TuningCandidate(_Record):
    id: str
    params: dict[str, Any]
    valid_mean_auc: float | None
    done: bool


class TuningSummary(_Record):
    """A tuned method's explicit candidates, each one's validation AUC, and the choice (None until all finished)."""

    seed: int
    scenario: str
    used_by: list[str]
    candidates: list[TuningCandidate]
    choice: str | None


class SearchCandidate(_Record):
    trial: int
    id: str
    params: dict[str, Any]
    valid_mean_auc: float | None


class SearchSummary(_Record):
    """A searched method's space, budget, sampler, every recorded trial and the choice (None until all trials ran)."""

    space: dict[str, dict[str, Any]]
    trials: int
    sampler: str
    seed: int
    startup_trials: int | None
    study: str
    tune_seed: int
    scenario: str
    used_by: list[str]
    done: int
    candidates: list[SearchCandidate]
    choice: str | None
    chosen_params: dict[str, Any] | None


# --- report.json ---------------------------------------------------------------------------------


class CellStats(_Record):
    """One table cell: test AUC over seeds."""

    mean: float | None
    std: float | None
    n: int
    seeds: list[int]
    values: list[float]


Rows = dict[str, dict[str, CellStats]]  # row label -> column -> cell


class Table4Report(_Record):
    scenario: str
    target: str
    rows: Rows
    improvement_percent: dict[str, float | None]


class AttentionBlock(_Record):
    domains: list[str]
    seeds: int
    weights: list[list[float]]


class Figure4Report(_Record):
    method: str
    attention: str
    groups: list[str] | None
    scenarios: dict[str, AttentionBlock]


class CostRow(_Record):
    parameters: int | None
    train_seconds_per_epoch: float | None
    runs: int


class TableCount(_Record):
    planned: int
    done: int


class RunCounts(_Record):
    planned: int
    done: int
    reused: int
    missing: list[str]
    per_table: dict[str, TableCount]
    stale: list[str] = []  # absent in reports rendered before stale runs were checked
    search_trials: dict[str, TableCount] | None = None


class Report(_Record):
    """report.json: the numbers of report.md. Tables absent from the experiment are absent here."""

    experiment: str
    description: str
    dataset: str
    domains: list[str]
    train_rows: dict[str, int]
    seeds: list[int]
    scenarios: dict[str, list[str]]
    table1: Rows | None = None
    table2: dict[str, Rows] | None = None  # scenario -> rows
    table3: dict[str, Rows] | None = None
    winners: dict[str, dict[str, dict[str, list[str]]]] | None = None  # table -> scenario -> column -> best labels
    table4: Table4Report | None = None
    figure4: Figure4Report | None = None
    cost: dict[str, CostRow] | None = None
    tuning: dict[str, TuningSummary]
    search: dict[str, SearchSummary] | None = None
    runs: RunCounts
    command: str | None
    rendered_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As written since the first reports: `winners` right after the first of table2/table3 it covers."""
        doc = super().to_json()
        first = next((t for t in ("table2", "table3") if t in doc), None)
        if "winners" not in doc or first is None:
            return doc
        winners = doc.pop("winners")
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out[k] = v
            if k == first:
                out["winners"] = winners
        return out
