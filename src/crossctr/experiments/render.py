"""The paper's tables and Figure 4 from an experiment's results file.

Reads `<out>/plan.json` (the experiment, the dataset's domains and scenarios, every planned
run) and `<out>/results.jsonl` (one record per finished run, the last of a key wins); writes

    report.md     Table 1, Tables 2/3 (one per scenario), Table 4, tuning choices, the search (space, budget,
                  sampler, every trial, the choice), runs done vs planned
    report.json   the same numbers, machine-readable
    figure4.png   mean attention weight per feature group per domain, one block of rows per scenario

Every cell is the mean ± sample standard deviation of test AUC over the seeds that finished
(n shown when fewer than planned); the best mean of a column is bold; a missing cell is "–".

Example:
    >>> render_report(Path("runs/experiments/paper-simulator"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crossctr.evaluation.report import attention_heatmap, markdown_table
from crossctr.experiments.choice import stale_keys, tuning_choices
from crossctr.experiments.grid import ALL, TABLES, Experiment, Plan, cell_key
from crossctr.experiments.records import (
    PLAN_FILE,
    RESULTS_FILE,
    AttentionBlock,
    CellStats,
    CostRow,
    Figure4Report,
    PlanFile,
    Report,
    ResultsFile,
    RunCounts,
    RunRecord,
    SearchSummary,
    Table4Report,
    TableCount,
    read_plan,
)
from crossctr.experiments.search import search_summary
from crossctr.inference import atomic_write
from crossctr.schema import ConfigError

__all__ = ["Cell", "render_report"]

log = logging.getLogger(__name__)

DASH = "–"


@dataclass
class Cell:
    """Test AUC of one method on one domain over seeds."""

    values: list[float]
    seeds: list[int]
    planned: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else math.nan

    def text(self, bold: bool = False) -> str:
        if not self.values:
            return DASH
        s = f"{self.mean:.4f}" + (f" ± {self.std:.4f}" if len(self.values) > 1 else "")
        if len(self.values) < self.planned:
            s += f" (n={len(self.values)})"
        return f"**{s}**" if bold else s

    def stats(self) -> CellStats:
        def nan(v: float) -> float | None:
            return None if math.isnan(v) else v

        return CellStats(
            mean=nan(self.mean), std=nan(self.std), n=len(self.values), seeds=self.seeds, values=self.values
        )


Rows = dict[str, dict[str, CellStats]]


class _Results:
    def __init__(self, exp: Experiment, plan: Plan, records: dict[str, RunRecord]) -> None:
        self.exp, self.plan, self.records = exp, plan, records

    def cell(
        self, method: str, scenario: str, domain: str, fraction: float = 1.0, split: Literal["valid", "test"] = "test"
    ) -> Cell:
        values, seeds = [], []
        for s in self.plan.seeds:
            rec = self.records.get(cell_key(self.exp, method, scenario, s, fraction))
            auc = rec.auc(split, domain) if rec else None
            if auc is not None:
                values.append(float(auc))
                seeds.append(s)
        return Cell(values, seeds, len(self.plan.seeds))


def _table(rows: dict[str, dict[str, Cell]], columns: Sequence[str], corner: str) -> str:
    """Markdown table, one row per method, best mean of each column in bold."""
    best = {}
    for c in columns:
        means = [r[c].mean for r in rows.values() if not math.isnan(r[c].mean)]
        best[c] = max(means) if means else None
    body = [
        [label, *[r[c].text(bold=best[c] is not None and r[c].mean == best[c]) for c in columns]]
        for label, r in rows.items()
    ]
    return markdown_table([corner, *columns], body)


def _winners(rows: dict[str, dict[str, Cell]], columns: Sequence[str]) -> tuple[str, dict[str, list[str]]]:
    """A plain sentence naming the best mean per column and its margin over the next method."""
    parts, best = [], {}
    for c in columns:
        ranked = sorted(
            ((r[c].mean, label, r[c]) for label, r in rows.items() if not math.isnan(r[c].mean)), key=lambda t: -t[0]
        )
        if not ranked:
            continue
        top = [label for mean, label, _ in ranked if mean == ranked[0][0]]
        best[c] = top
        text = f"{c}: {' = '.join(top)} ({ranked[0][0]:.4f})"
        rest = [t for t in ranked if t[1] not in top]
        if rest:
            gap = ranked[0][0] - rest[0][0]
            noise = max((x for x in (ranked[0][2].std, rest[0][2].std) if not math.isnan(x)), default=math.nan)
            within = "" if math.isnan(noise) else (", within one seed std" if gap <= noise else "")
            text += f", next {rest[0][1]} by {gap:.4f}{within}"
        parts.append(text)
    return ("Best mean test AUC per domain — " + "; ".join(parts) + ".") if parts else "", best


def _json_rows(rows: dict[str, dict[str, Cell]]) -> Rows:
    return {label: {c: cell.stats() for c, cell in r.items()} for label, r in rows.items()}


def _load(out: Path) -> tuple[PlanFile, Experiment, Plan]:
    doc = read_plan(out)
    if doc is None:
        raise ConfigError(
            f"{out}: no {PLAN_FILE}; run the experiment into this folder first (a --dry-run writes nothing)"
        )
    # Tuning specs and searched methods are rebuilt so the choice is read exactly as the runner read it;
    # the main runs too, to check each record's settings against what the plan asks now.
    exp, plan = doc.rebuild()
    return doc, exp, plan


def public_command(command: str) -> str:
    """`command` with its --data-root folder written `<data-root>`: a published report names no machine's folders."""
    args = shlex.split(command)
    for i, arg in enumerate(args):
        if arg == "--data-root" and i + 1 < len(args):
            args[i + 1] = "<data-root>"
        elif arg.startswith("--data-root="):
            args[i] = "--data-root=<data-root>"
    return shlex.join(args)


PUBLISHED = ("report.md", "report.json", "figure4.png", RESULTS_FILE)


def publish_report(out: str | Path, dest: str | Path) -> list[Path]:
    """Render `out`'s report afresh and copy it, its figure and its results into `dest`, for committing beside docs.

    The copy names the command that made the results with its data folder written `<data-root>`
    (records hold no paths), and no render command, which would name this machine's results folder.
    """
    out, dest = Path(out), Path(dest)
    report = render_report(out)
    cmd = report.command
    public = public_command(cmd) if cmd else cmd
    report.command = public
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PUBLISHED:
        src = out / name
        if not src.exists():
            continue
        if name == "report.md":
            data = src.read_text().replace(cmd, public).encode() if cmd and public is not None else src.read_bytes()
        elif name == "report.json":
            data = _report_json(report)
        else:
            data = src.read_bytes()
        atomic_write(dest / name, data)
        written.append(dest / name)
    return written


def _report_json(report: Report) -> bytes:
    return json.dumps(report.to_json(), indent=2, allow_nan=False).encode()


def render_report(out: str | Path, command: str | None = None) -> Report:
    """Write report.md, report.json and figure4.png into `out`; return the report."""
    out = Path(out)
    doc, exp, plan = _load(out)
    records = ResultsFile(out / RESULTS_FILE).latest()
    # Records made under other settings (a changed config or tuning choice) are not this
    # experiment's numbers: left out of every cell and listed, until the runner redoes them.
    stale = sorted(stale_keys(exp, plan, records, doc.dataset_id)) if doc.dataset_id else []
    records = {k: v for k, v in records.items() if k not in stale}
    res = _Results(exp, plan, records)
    t = exp.tables
    # report.json's parts as they are made; validated as a Report at the end
    report: dict[str, Any] = {
        "experiment": exp.name,
        "description": exp.description,
        "dataset": doc.dataset,
        "domains": list(plan.domains),
        "train_rows": plan.sizes,
        "seeds": list(plan.seeds),
        "scenarios": {k: list(v) for k, v in plan.scenarios.items()},
    }
    md = [f"# Experiment `{exp.name}` on `{doc.dataset}`", ""]
    if exp.description:
        md += [exp.description.strip(), ""]
    md += [
        f"Training rows per domain: {', '.join(f'{d} {n:,}' for d, n in plan.sizes.items())}; rich domain {plan.rich}, "
        f"smallest {plan.smallest}. Seeds {list(plan.seeds)}. Cells: test AUC, mean ± sample std over seeds "
        f"(n when fewer seeds finished); best mean per column in bold; {DASH} = not run yet.",
        "",
    ]

    if t.table1 is not None:
        rows = {exp.methods[m].label: {d: res.cell(m, ALL, d) for d in plan.domains} for m in t.table1.methods}
        md += [
            "## Table 1: base models, each domain trained on its own data",
            "",
            _table(rows, plan.domains, "AUC (test)"),
            "",
        ]
        report["table1"] = _json_rows(rows)

    for name, scenarios, title in (
        ("table2", plan.pairs or [ALL], "cross-domain methods, the rich domain paired with each other domain"),
        ("table3", [ALL], "cross-domain methods, all domains at once"),
    ):
        table = getattr(t, name)
        if table is None:
            continue
        md += [f"## Table {name[-1]}: {title}", ""]
        report[name] = {}
        for scen in scenarios:
            doms = list(plan.scenarios[scen])
            ref = exp.reference.get(doc.dataset, {}) if name == "table3" else {}
            cols = [*doms, "overall"] if ref else doms
            rows = {exp.methods[m].label: {d: res.cell(m, scen, d) for d in cols} for m in table.methods}
            for label, aucs in ref.items():
                rows[f"{label} (published)"] = {d: Cell([aucs[d]] if d in aucs else [], [], 1) for d in cols}
            md += [
                f"### Scenario {scen if scen != ALL else 'all domains (' + ', '.join(doms) + ')'}",
                "",
                _table(rows, cols, "AUC (test)"),
                "",
            ]
            if ref:
                md += [f"Rows marked (published): {exp.reference_source or 'published numbers'}; not trained here.", ""]
            sentence, best = _winners(rows, cols)
            if sentence:
                md += [sentence, ""]
            report[name][scen] = _json_rows(rows)
            report.setdefault("winners", {}).setdefault(name, {})[scen] = best
        if any(exp.methods[m].per_domain for m in table.methods):
            md += [
                "Self-train and Src-only models of a domain do not depend on the other domains present: their cells "
                "come from one run on all domains per seed.",
                "",
            ]
        for m in table.methods:  # which model scores which domain (the run's config.json: route)
            st = exp.methods[m].strategy
            if st.name == "finetune":
                src = st.source or plan.rich
                who = "the model pretrained on it" if st.source_model == "pretrained" else "the fine-tuned model"
                md += [
                    f"{exp.methods[m].label}: pretrained on "
                    f"{src}{'' if st.source else ' (the most training rows)'}, then "
                    f"fine-tuned on the other domains' rows; {src} is "
                    f"scored by {who}, the others by the fine-tuned model.",
                    "",
                ]

    if t.table4 is not None:
        md += _table4(res, report)
    if t.figure4 is not None:
        md += _figure4(res, out, report)
    md += _cost(res, report)
    md += _tuning(exp, plan, records, report)
    md += _search(exp, plan, records, report)
    md += _counts(doc, records, report, report.get("search", {}), stale)
    cmd = doc.command
    md += [
        "## Provenance",
        "",
        f"Results produced by: `{cmd}`" if cmd else "Results produced by: (command not recorded)",
    ]
    if command and command != cmd:
        md.append(f"This report rendered by: `{command}`")
    report["command"] = cmd
    report["rendered_by"] = command
    md += [
        "crossctr version of the runs: "
        f"{', '.join(sorted({str(r.crossctr_version) for r in records.values()})) or DASH}",
        "",
    ]
    typed = Report.model_validate(report)
    atomic_write(out / "report.md", "\n".join(md).encode())
    atomic_write(out / "report.json", _report_json(typed))
    return typed


def _cost(res: _Results, report: dict[str, Any]) -> list[str]:
    """Parameters and training seconds per epoch of each Table 3 method (all domains at once)."""
    t3 = res.exp.tables.table3
    if t3 is None:
        return []
    rows, out = [], {}
    for m in t3.methods:
        recs = [r for s in res.plan.seeds if (r := res.records.get(cell_key(res.exp, m, ALL, s)))]
        if not recs:
            continue
        per_epoch, bound = [], False
        for r in recs:
            # Epochs the fits ran (per-domain fits count once); a record without `epochs_run` (older
            # runs) divides by the configured maximum: a lower bound if early stopping ended it sooner.
            epochs = max((r.epochs_run or {}).values(), default=0)
            if not epochs:
                epochs, bound = int(r.config.train.get("epochs", 0)), True
            if epochs and r.train_seconds:
                per_epoch.append(r.train_seconds / epochs)
        label = res.exp.methods[m].label
        params = recs[0].parameters
        sec = float(np.mean(per_epoch)) if per_epoch else math.nan
        out[label] = CostRow(
            parameters=params, train_seconds_per_epoch=None if math.isnan(sec) else sec, runs=len(per_epoch)
        )
        rows.append(
            [
                label,
                f"{params:,}" if params else DASH,
                DASH if math.isnan(sec) else ("≥ " if bound else "") + f"{sec:.0f}",
                str(len(per_epoch)),
            ]
        )
    if not rows:
        return []
    report["cost"] = out
    return [
        "## Cost (all domains at once)",
        "",
        "Parameters of the trained model(s) (Self-train: all per-domain models together) and training seconds per "
        "epoch (per-domain fits summed), mean over the finished seeds, measured on whatever machine ran them "
        "(≥: runs recorded before the epochs they ran were, divided by the configured maximum).",
        "",
        markdown_table(["method", "parameters", "train s / epoch", "runs"], rows),
        "",
    ]


def _table4(res: _Results, report: dict[str, Any]) -> list[str]:
    t4, plan, exp = res.exp.tables.table4, res.plan, res.exp
    assert t4 is not None
    scen, target = plan.fraction_scenario, plan.smallest
    cols = [f"{f:.0%}" for f in t4.fractions]
    rows = {
        exp.methods[m].label: {c: res.cell(m, scen, target, f) for c, f in zip(cols, t4.fractions, strict=False)}
        for m in (t4.baseline, t4.method)
    }
    base_label, ours_label = exp.methods[t4.baseline].label, exp.methods[t4.method].label
    base, ours = rows[base_label], rows[ours_label]
    gain = {c: (ours[c].mean - base[c].mean) / base[c].mean * 100 for c in cols}
    text = _table(rows, cols, f"AUC (test, {target})").splitlines()
    text.append("| Improvement | " + " | ".join(DASH if math.isnan(g) else f"{g:+.1f}%" for g in gain.values()) + " |")
    report["table4"] = Table4Report(
        scenario=scen,
        target=target,
        rows=_json_rows(rows),
        improvement_percent={c: None if math.isnan(g) else g for c, g in gain.items()},
    )
    return [
        f"## Table 4: share of {target}'s training rows (scenario {scen})",
        "",
        f"{target}'s training rows are subsampled (seeded, nested across fractions); validation and test rows and the "
        f"other domain are unchanged. Improvement = ({ours_label} − {base_label}) / {base_label} of the mean test AUC. "
        f"The 100% column is the Table {'2' if scen != ALL else '3'} run.",
        "",
        "\n".join(text),
        "",
    ]


def _figure4(res: _Results, out: Path, report: dict[str, Any]) -> list[str]:
    fig, plan, exp = res.exp.tables.figure4, res.plan, res.exp
    assert fig is not None
    kind = fig.attention
    labels, blocks, groups, per_scen = [], [], None, {}
    for scen in [*plan.pairs, ALL]:
        mats = []
        for s in plan.seeds:
            rec = res.records.get(cell_key(exp, fig.method, scen, s))
            att = rec.attention if rec else None
            weights = getattr(att, kind) if att else None
            if att is None or weights is None:
                continue
            groups = groups or att.groups
            mats.append(np.array(weights, dtype=float))  # (n_domains of scen, n_groups); null -> nan
        if not mats:
            continue
        mean = np.nanmean(np.stack(mats), axis=0)  # (n_domains, n_groups), averaged over seeds
        doms = plan.scenarios[scen]
        labels += [f"{scen}: {d}" for d in doms]
        blocks.append(mean)
        per_scen[scen] = AttentionBlock(domains=list(doms), seeds=len(mats), weights=mean.tolist())
    report["figure4"] = Figure4Report(method=fig.method, attention=kind, groups=groups, scenarios=per_scen)
    head = [f"## Figure 4: {exp.methods[fig.method].label} {kind} attention per feature group", ""]
    if not blocks:
        return [*head, f"No finished {fig.method} run with attention yet: figure4.png not drawn.", ""]
    assert groups is not None  # set by the first record whose attention made a block
    attention_heatmap(
        np.vstack(blocks),
        labels,
        groups,
        out / "figure4.png",
        f"{exp.methods[fig.method].label}: mean {kind} attention per feature group (mean over seeds)",
    )
    return [
        *head,
        "Rows: scenario: domain; each cell the mean attention weight over that domain's test rows and the "
        "group's features, averaged over seeds.",
        "",
        "![Figure 4](figure4.png)",
        "",
    ]


def _tuning(exp: Experiment, plan: Plan, records: dict[str, RunRecord], report: dict[str, Any]) -> list[str]:
    info = tuning_choices(exp, records, plan)
    report["tuning"] = info
    if not info:
        return []
    md = [
        "## Hyper-parameters chosen on validation",
        "",
        f"Each candidate trained on all domains with seed {exp.tune_seed}; the best mean validation AUC over domains "
        "wins and is used for every run of that method.",
        "",
    ]
    for method, entry in info.items():
        rows = []
        for c in entry.candidates:
            auc = DASH if c.valid_mean_auc is None else f"{c.valid_mean_auc:.4f}"
            rows.append(
                [c.id, f"`{json.dumps(c.params, sort_keys=True)}`", auc, "chosen" if c.id == entry.choice else ""]
            )
        md += [
            f"### {exp.methods[method].label} (`{method}`)",
            "",
            markdown_table(["candidate", "overrides", "valid mean AUC", ""], rows),
            "",
        ]
        if entry.choice is None:
            md += ["Not all candidates have finished: no choice yet.", ""]
    return md


def _search(exp: Experiment, plan: Plan, records: dict[str, RunRecord], report: dict[str, Any]) -> list[str]:
    info = search_summary(exp, records, plan)
    if not info or exp.search is None:
        return []
    report["search"] = info
    s = exp.search
    sampler = (
        f"TPE sampler ({s.startup} random trial{'s' if s.startup != 1 else ''} first)"
        if s.sampler == "tpe"
        else "random sampler"
    )
    md = [
        "## Hyper-parameter search on validation",
        "",
        f"Every searched method gets the same budget: {s.trials} trials proposed by Optuna's {sampler}, seed {s.seed}. "
        f"Each trial trains on all domains with seed {exp.tune_seed}; the best mean validation AUC over domains wins "
        "(ties: the earlier trial) and is used for every run of that method and of the methods that take its settings. "
        "Random draws depend on the seed and the trial number only, so methods with the same space get the same random "
        "trials; later TPE trials follow each method's own results.",
        "",
    ]
    for method, entry in info.items():
        paths = list(entry.space)
        md += [
            f"### {exp.methods[method].label} (`{method}`)",
            "",
            markdown_table(["setting", "searched over"], [[f"`{p}`", _describe(entry.space[p])] for p in paths]),
            "",
        ]
        others = [m for m in entry.used_by if m != method]
        if others:
            md += [f"Its choice is also used by: {', '.join(f'`{m}`' for m in others)}.", ""]
        rows = []
        for c in entry.candidates:
            auc = DASH if c.valid_mean_auc is None else f"{c.valid_mean_auc:.4f}"
            rows.append(
                [
                    str(c.trial),
                    c.id,
                    *[_value(c.params.get(p)) for p in paths],
                    auc,
                    "chosen" if c.id == entry.choice else "",
                ]
            )
        if rows:
            md += [markdown_table(["trial", "candidate", *[f"`{p}`" for p in paths], "valid mean AUC", ""], rows), ""]
        if entry.choice is None:
            md += [f"{entry.done} of {entry.trials} trials have finished: no choice yet.", ""]
    return md


def _describe(param: dict[str, Any]) -> str:
    """A searched setting's space in words: `[0.0003, 0.003] log` or `one of 0, 1e-06`."""
    if "choices" in param:
        return "one of " + ", ".join(_value(c) for c in param["choices"])
    text = f"[{_value(param['low'])}, {_value(param['high'])}]"
    extras = [w for w, on in (("log scale", param.get("log")), ("integers", param.get("integer"))) if on]
    if param.get("step") is not None:
        extras.append(f"step {_value(param['step'])}")
    return text + (" " + ", ".join(extras) if extras else "")


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else DASH if v is None else str(v)


def _counts(
    doc: PlanFile,
    records: dict[str, RunRecord],
    report: dict[str, Any],
    search: dict[str, SearchSummary],
    stale: Sequence[str] = (),
) -> list[str]:
    runs = doc.plan.runs
    missing = [r.key for r in runs if r.key not in records]
    per_table = {}
    for name in TABLES:
        keys = [r.key for r in runs if name in r.tables]
        if keys:
            per_table[name] = TableCount(planned=len(keys), done=sum(k in records for k in keys))
    reused = sum(1 for r in runs if r.key in records and records[r.key].reused_from)
    counts = RunCounts(
        planned=len(runs),
        done=len(runs) - len(missing),
        reused=reused,
        missing=missing,
        per_table=per_table,
        stale=list(stale),
    )
    md = [
        "## Runs",
        "",
        f"{len(runs) - len(missing)} of {len(runs)} planned runs are "
        f"done ({reused} of them reuse an identical run's record).",
    ]
    md += [f"- {k}: {v.done} / {v.planned}" for k, v in per_table.items()]
    if search:
        counts.search_trials = {m: TableCount(planned=e.trials, done=e.done) for m, e in search.items()}
        md += [f"- search trials of {m}: {v.done} / {v.planned}" for m, v in counts.search_trials.items()]
    report["runs"] = counts
    if stale:
        md += [
            "",
            f"{len(stale)} recorded run(s) were made under other settings than the plan now asks for "
            "(a changed config or tuning choice); they count as missing until the runner trains them again: "
            + ", ".join(f"`{k}`" for k in stale[:20])
            + (" …" if len(stale) > 20 else ""),
        ]
    if missing:
        shown = missing[:40]
        md += [
            "",
            f"**Missing {len(missing)} run(s)**; their cells show {DASH} or average fewer seeds:",
            "",
            *[f"- `{k}`" for k in shown],
        ]
        if len(missing) > len(shown):
            md.append(f"- … and {len(missing) - len(shown)} more (report.json lists all)")
    else:
        md += ["", "Nothing is missing."]
    return [*md, ""]
