"""What a dataset looks like before training: `crossctr inspect DATASET_YAML --out DIR`.

Streams the files twice in bounded memory, like `crossctr prepare` (whose fit pass it reuses),
and reports:

* rows and positive-label rate per domain and split;
* per feature: missing-value rate (overall and per domain), cardinality (distinct training
  values and vocabulary size for categorical / multi-valued features, buckets for numeric,
  occupied hash buckets for hashed / crossed), multi-valued cells cut at max_len;
* OOV rates of the valid and test rows against the training vocabulary (categorical and
  multi-valued features: share of present values that map to the OOV id);
* what `prepare` would refuse (constant features, a domain without positives in a split);
* per categorical feature, how many values appear in more than one domain, per pair of domains,
  with the rank correlation of the shared values' row counts in the two domains. Shared users
  are the point of cross-domain learning (and an active user is usually active on both
  platforms: a positive correlation); ids numbered independently per platform collide by
  accident and their counts are unrelated. Such an overlap is reported as a problem, with the
  fix (`per_domain: true`). A `per_domain` feature reports the overlap of its raw values, which
  the namespacing keeps apart.

Written as inspect.md, inspect.json, domains.png (rows and label rate per domain) and
features.png (missing and OOV rates per feature).

Example:
    >>> report = inspect_dataset("data/dataset.yaml", "report/")  # doctest: +SKIP
    >>> print(report.markdown)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossctr.data.encoders import (
    N_RESERVED,
    OOV_ID,
    CategoricalEncoder,
    CrossedEncoder,
    HashedEncoder,
    MultiEncoder,
    NumericBucketizer,
)
from crossctr.data.io import DOMAIN_SEPARATOR, DataError, check_input_files, resolve_input_files
from crossctr.data.prepare import SPLITS, PrepareOptions, check_stats, fit_stream, scan_stream
from crossctr.schema import DatasetSchema, FeatureKind

__all__ = ["InspectReport", "inspect_dataset"]

log = logging.getLogger(__name__)

_BITMAP_LIMIT = 1 << 24  # hashed features with more buckets report no occupancy (memory)
# An overlap looks accidental when at least this many values are shared by two domains (fewer:
# too few to judge) and their row counts in the two domains have a rank correlation below
# _ACCIDENTAL_RHO (independently numbered ids: about 0; shared users: clearly positive).
_MIN_SHARED = 50
_ACCIDENTAL_RHO = 0.2


class _DomainValueCounts:
    """(value, domain) -> rows of one categorical feature over all splits, merged by group-by."""

    def __init__(self) -> None:
        self.merged: pa.Table | None = None
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def add(self, values: pa.Array, domain: np.ndarray) -> None:
        t = pa.table({"v": values, "d": pa.array(domain.astype(np.int16))}).filter(pc.is_valid(values))
        t = t.group_by(["v", "d"]).aggregate([("v", "count")])
        self.pending.append(t.rename_columns(["v", "d", "n"]).select(["v", "d", "n"]))
        self.pending_rows += t.num_rows
        if self.pending_rows > max(1 << 18, len(self.merged or [])):
            self.compact()

    def compact(self) -> None:
        parts = ([self.merged] if self.merged is not None else []) + self.pending
        if parts:
            t = pa.concat_tables(parts).group_by(["v", "d"]).aggregate([("n", "sum")])
            self.merged = pa.table({"v": t.column("v"), "d": t.column("d"), "n": t.column("n_sum")})
        self.pending, self.pending_rows = [], 0

    def overlap(self, doms: list[str]) -> dict[str, Any]:
        """Values in several domains, overall and per pair, with the pairs' count correlation."""
        self.compact()
        if self.merged is None:
            return {"values": 0, "in_several_domains": 0, "pairs": {}}
        codes = pc.dictionary_encode(self.merged.column("v").combine_chunks()).indices.to_numpy(zero_copy_only=False)
        d = self.merged.column("d").to_numpy()
        n = self.merged.column("n").to_numpy()
        n_values = int(codes.max()) + 1 if len(codes) else 0
        per_value = np.bincount(codes, minlength=n_values)  # domains each value appears in
        out: dict[str, Any] = {"values": n_values, "in_several_domains": int((per_value > 1).sum()), "pairs": {}}
        by_dom = {k: (codes[d == k], n[d == k]) for k in range(len(doms))}
        for i in range(len(doms)):
            for j in range(i + 1, len(doms)):
                (ci, ni), (cj, nj) = by_dom[i], by_dom[j]
                shared, ii, jj = np.intersect1d(ci, cj, assume_unique=True, return_indices=True)
                rho = _spearman(ni[ii], nj[jj]) if len(shared) >= 3 else None
                out["pairs"][f"{doms[i]}~{doms[j]}"] = {
                    "shared": int(len(shared)),
                    f"share_of_{doms[i]}": _rate(len(shared), len(ci)),
                    f"share_of_{doms[j]}": _rate(len(shared), len(cj)),
                    "count_rank_correlation": rho,
                }
        return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when one side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first copy
    return (starts + (counts - 1) / 2.0)[inverse]


def _accidental(name: str, info: dict[str, Any], per_domain: bool) -> str | None:
    """The warning for an overlap that looks accidental, or None."""
    if per_domain:
        return None
    for pair, p in info["pairs"].items():
        rho = p["count_rank_correlation"]
        if p["shared"] >= _MIN_SHARED and rho is not None and rho < _ACCIDENTAL_RHO:
            a, b = pair.split("~")
            return (
                f"feature {name!r}: {p['shared']:,} values appear in both "
                f"{a!r} and {b!r}, but how often a value occurs in one "
                "domain says nothing about the other (rank correlation "
                f"of their row counts {rho:.2f}): the overlap looks "
                "accidental, e.g. ids numbered separately on each "
                "platform, which training would merge into one id. If the "
                "same value means different things per domain, set "
                f"`per_domain: true` on {name!r}; if they are the same "
                "entities (shared users), keep it as it is."
            )
    return None


@dataclass
class InspectReport:
    summary: dict[str, Any]  # everything, JSON-ready
    markdown: str
    files: list[Path]  # what was written


def inspect_dataset(
    dataset_yaml: str | Path, out: str | Path, options: PrepareOptions = PrepareOptions()
) -> InspectReport:
    """Profile a dataset and write the report into `out` (see the module docstring)."""
    dataset_yaml, out = Path(dataset_yaml), Path(out)
    schema = DatasetSchema.from_yaml(dataset_yaml)
    files = check_input_files(resolve_input_files(schema, dataset_yaml.parent), schema)
    encoder, stats = fit_stream(schema, files, options, desc="inspect")
    lenient = PrepareOptions(allow_constant=True, allow_single_class=True)
    try:
        problems = check_stats(schema, encoder, stats, lenient, str(schema.resolve_path(dataset_yaml.parent)))
    except DataError as err:  # an empty split or a domain without training rows
        problems = [str(err)]

    # Pass 2: OOV of valid / test values, occupied hash buckets on train.
    oov = {
        f.name: np.zeros((3, 2), np.int64)
        for f in schema.features
        if f.kind in (FeatureKind.CATEGORICAL, FeatureKind.MULTI)
    }
    used = {
        f.name: np.zeros(f.buckets, bool)
        for f in schema.features
        if f.kind in (FeatureKind.HASHED, FeatureKind.CROSSED) and f.buckets <= _BITMAP_LIMIT
    }
    cols = encoder.slot_columns()
    across = {f.name: _DomainValueCounts() for f in schema.features if f.kind is FeatureKind.CATEGORICAL}
    namespaced = {f.name for f in schema.features if f.per_domain}
    for b in scan_stream(schema, files, stats.batch_rows, "inspect 2/2", options.progress, total=int(stats.rows.sum())):
        for name, acc in across.items():
            values = b.table.column(name).combine_chunks()
            if name in namespaced:  # the raw value, without the domain prefix
                values = pc.replace_substring_regex(
                    values, f"^[^{DOMAIN_SEPARATOR}]*{DOMAIN_SEPARATOR}", "", max_replacements=1
                )
            acc.add(values, b.domain)
        x = encoder.transform(b.table)  # (n, S)
        for f, sl in zip(schema.features, cols, strict=False):
            ids = x[:, sl]
            if f.name in oov:
                present = (ids == OOV_ID) | (ids >= N_RESERVED)  # a value that was there (not pad, not missing)
                for s in range(3):
                    rows = b.which == s
                    oov[f.name][s, 0] += int(present[rows].sum())
                    oov[f.name][s, 1] += int((ids[rows] == OOV_ID).sum())
            elif f.name in used:
                train_ids = ids[b.which == 0, 0] - N_RESERVED
                used[f.name][train_ids[train_ids >= 0]] = True

    doms = list(schema.domain.values)
    summary: dict[str, Any] = {
        "dataset": schema.name,
        "files": [str(f.path.name) for f in files],
        "domains": {},
        "features": {},
        "problems": problems,
    }
    for d, dom in enumerate(doms):
        summary["domains"][dom] = {
            s: {"rows": int(stats.rows[i, d]), "positive_rate": _rate(stats.positives[i, d], stats.rows[i, d])}
            for i, s in enumerate(SPLITS)
        }
    per_dom_rows = stats.rows.sum(axis=0)
    for f in schema.features:
        enc = encoder.encoders_[f.name]
        info: dict[str, Any] = {
            "kind": f.kind.value,
            "missing_rate": _rate(stats.missing[f.name].sum(), per_dom_rows.sum()),
            "missing_rate_per_domain": {
                dom: _rate(stats.missing[f.name][d], per_dom_rows[d]) for d, dom in enumerate(doms)
            },
        }
        if f.kind in (FeatureKind.CATEGORICAL, FeatureKind.MULTI):
            info["distinct_train_values"] = stats.distinct.get(f.name, 0)
            assert isinstance(enc, CategoricalEncoder | MultiEncoder)  # new_encoder's classes for these kinds
            info["vocabulary"] = len(enc.vocab_)
            for i, split in enumerate(SPLITS[1:], start=1):
                info[f"oov_rate_{split}"] = _rate(oov[f.name][i, 1], oov[f.name][i, 0])
            if isinstance(enc, MultiEncoder):
                info["cells_cut_at_max_len"] = stats.truncated.get(f.name, 0)
        elif isinstance(enc, NumericBucketizer):
            info["buckets"] = len(enc.boundaries_) + 1
            info["finite_train_values"] = stats.finite.get(f.name, 0)
        elif isinstance(enc, HashedEncoder | CrossedEncoder):
            info["buckets"] = enc.buckets
            if f.name in used:
                info["buckets_used_in_train"] = int(used[f.name].sum())
        if f.name in across:
            info["cross_domain"] = across[f.name].overlap(doms) | {"per_domain": bool(f.per_domain)}
            warning = _accidental(f.name, info["cross_domain"], bool(f.per_domain))
            if warning:
                problems.append(warning)
                log.warning("%s", warning)
        summary["features"][f.name] = info

    out.mkdir(parents=True, exist_ok=True)
    md = _markdown(summary, doms)
    written = [out / "inspect.md", out / "inspect.json", out / "domains.png", out / "features.png"]
    written[0].write_text(md, encoding="utf-8")
    written[1].write_text(json.dumps(summary, indent=1), encoding="utf-8")
    _plots(summary, doms, written[2], written[3])
    return InspectReport(summary, md, written)


def _rate(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _markdown(summary: dict[str, Any], doms: list[str]) -> str:
    lines = [
        f"# Dataset {summary['dataset']}",
        "",
        f"Files: {len(summary['files'])} "
        f"({', '.join(summary['files'][:5])}{' …' if len(summary['files']) > 5 else ''})",
        "",
    ]
    lines += [
        "## Domains",
        "",
        "| domain | " + " | ".join(f"{s} rows | {s} positive" for s in SPLITS) + " |",
        "|---|" + "---:|" * (2 * len(SPLITS)),
    ]
    for dom in doms:
        cells = [
            f"{summary['domains'][dom][s]['rows']:,} | {_pct(summary['domains'][dom][s]['positive_rate'])}"
            for s in SPLITS
        ]
        lines.append(f"| {dom} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Features",
        "",
        "| feature | kind | missing | "
        + " | ".join(f"missing {d}" for d in doms)
        + " | cardinality | OOV valid | OOV test |",
        "|---|---|" + "---:|" * (len(doms) + 4),
    ]
    for name, f in summary["features"].items():
        if "vocabulary" in f:
            card = f"{f['distinct_train_values']:,} values, vocab {f['vocabulary']:,}"
            if f.get("cells_cut_at_max_len"):
                card += f", {f['cells_cut_at_max_len']:,} cells cut"
        elif "buckets_used_in_train" in f:
            card = f"{f['buckets_used_in_train']:,} / {f['buckets']:,} buckets used"
        else:
            card = f"{f.get('buckets', '—')} buckets"
        per_dom = " | ".join(_pct(f["missing_rate_per_domain"][d]) for d in doms)
        lines.append(
            f"| {name} | {f['kind']} | {_pct(f['missing_rate'])} | {per_dom} | {card} | "
            f"{_pct(f.get('oov_rate_valid'))} | {_pct(f.get('oov_rate_test'))} |"
        )
    shared = {n: f["cross_domain"] for n, f in summary["features"].items() if "cross_domain" in f}
    if shared and len(doms) > 1:
        lines += [
            "",
            "## Values shared across domains",
            "",
            "How many values of each categorical feature appear in more than one domain, and, per pair of domains, "
            "the rank correlation of the shared values' row counts (near 0: unrelated, the overlap looks accidental).",
            "",
            "| feature | values | in several domains | pair | shared | count correlation | per_domain |",
            "|---|---:|---:|---|---:|---:|---|",
        ]
        for name, c in shared.items():
            for k, (pair, p) in enumerate(c["pairs"].items()):
                rho = "—" if p["count_rank_correlation"] is None else f"{p['count_rank_correlation']:.2f}"
                head = f"| {name} | {c['values']:,} | {c['in_several_domains']:,}" if k == 0 else "| | |"
                ns = ("yes (kept apart)" if c["per_domain"] else "no") if k == 0 else ""
                lines.append(f"{head} | {pair.replace('~', ' & ')} | {p['shared']:,} | {rho} | {ns} |")
    lines += ["", "## Problems", ""]
    lines += [f"- {p}" for p in summary["problems"]] or ["None found."]
    lines += [
        "",
        "![rows and label rate per domain](domains.png)",
        "",
        "![missing and OOV rates per feature](features.png)",
        "",
    ]
    return "\n".join(lines)


def _plots(summary: dict[str, Any], doms: list[str], domains_png: Path, features_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    x = np.arange(len(doms))
    w = 0.8 / len(SPLITS)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.9))
    top = 0.0
    for i, s in enumerate(SPLITS):
        rows = [summary["domains"][d][s]["rows"] for d in doms]
        rate = [summary["domains"][d][s]["positive_rate"] or 0.0 for d in doms]
        top = max(top, *rate)
        ax1.bar(x + (i - 1) * w, rows, w, label=s, color=f"C{i}")
        bars = ax2.bar(x + (i - 1) * w, rate, w, label=s, color=f"C{i}")
        ax2.bar_label(bars, labels=[f"{r:.1%}" for r in rate], fontsize=7, padding=2)
    ax1.set_yscale("log")
    ax1.set_title("rows per domain and split (log scale)", fontsize=10)
    ax1.set_ylabel("rows")
    ax2.set_title("positive-label rate per domain and split", fontsize=10)
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax2.set_ylim(0, max(top * 1.3, 0.01))  # headroom for the labels; no legend over a bar
    for ax in (ax1, ax2):
        ax.set_xticks(x, doms)
        ax.set_xlabel("domain")
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=len(SPLITS),
        fontsize=9,
        frameon=False,
        title="split",
        title_fontsize=9,
        bbox_to_anchor=(0.5, 1.0),
    )
    fig.tight_layout(rect=(0, 0, 1, 0.86))  # the legend sits above the panels
    fig.savefig(domains_png, dpi=110)
    plt.close(fig)

    names = list(summary["features"])
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(names) + 2.0))
    series = [
        ("missing", [summary["features"][n]["missing_rate"] or 0.0 for n in names]),
        ("OOV valid", [summary["features"][n].get("oov_rate_valid") or 0.0 for n in names]),
        ("OOV test", [summary["features"][n].get("oov_rate_test") or 0.0 for n in names]),
    ]
    h = 0.8 / len(series)
    largest = max((v for _, vals in series for v in vals), default=0.0)
    for i, (label, vals) in enumerate(series):
        bars = ax.barh(y + (i - 1) * h, vals, h, label=label)
        ax.bar_label(bars, labels=[_share(v) for v in vals], fontsize=6.5, padding=2)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    # At least 0-10 %: a 0.1 % rate stays a sliver instead of filling the axis.
    ax.set_xlim(0, max(0.10, largest * 1.25))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of rows (missing) or of values (OOV: not in the training vocabulary)")
    ax.set_title("missing values and out-of-vocabulary rates per feature", fontsize=10, pad=22)
    ax.legend(
        fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False
    )  # above the bars, never on one
    fig.tight_layout()
    fig.savefig(features_png, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _share(v: float) -> str:
    """Bar label: '' for 0, '<0.1%' for tiny shares, else one decimal."""
    if v <= 0:
        return ""
    return "<0.1%" if v < 0.001 else f"{v:.1%}"
