"""What a dataset looks like before training: `crossctr inspect DATASET_YAML --out DIR`.

Streams the files twice in bounded memory, like `crossctr prepare` (whose fit pass it reuses),
and reports:

* rows and positive-label rate per domain and split;
* per feature: missing-value rate (overall and per domain), cardinality (distinct training
  values and vocabulary size for categorical / multi-valued features, buckets for numeric,
  occupied hash buckets for hashed / crossed), multi-valued cells cut at max_len;
* OOV rates of the valid and test rows against the training vocabulary (categorical and
  multi-valued features: share of present values that map to the OOV id);
* what `prepare` would refuse (constant features, a domain without positives in a split).

Written as inspect.md, inspect.json, domains.png (rows and label rate per domain) and
features.png (missing and OOV rates per feature).

Example:
    >>> report = inspect_dataset("data/dataset.yaml", "report/")  # doctest: +SKIP
    >>> print(report.markdown)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossctr.data.encoders import N_RESERVED, OOV_ID, CrossedEncoder, HashedEncoder, MultiEncoder, NumericBucketizer
from crossctr.data.io import DataError, check_input_files, resolve_input_files
from crossctr.data.prepare import SPLITS, PrepareOptions, check_stats, fit_stream, scan_stream
from crossctr.schema import DatasetSchema, FeatureKind

__all__ = ["InspectReport", "inspect_dataset"]

_BITMAP_LIMIT = 1 << 24  # hashed features with more buckets report no occupancy (memory)


@dataclass
class InspectReport:
    summary: dict[str, Any]  # everything, JSON-ready
    markdown: str
    files: list[Path]  # what was written


def inspect_dataset(dataset_yaml: str | Path, out: str | Path, options: PrepareOptions = PrepareOptions()) -> InspectReport:
    """Profile a dataset and write the report into `out` (see the module docstring)."""
    dataset_yaml, out = Path(dataset_yaml), Path(out)
    schema = DatasetSchema.from_yaml(dataset_yaml)
    files = check_input_files(resolve_input_files(schema, dataset_yaml.parent), schema)
    encoder, stats = fit_stream(schema, files, options)
    lenient = PrepareOptions(allow_constant=True, allow_single_class=True)
    try:
        problems = check_stats(schema, encoder, stats, lenient, str(schema.resolve_path(dataset_yaml.parent)))
    except DataError as err:  # an empty split or a domain without training rows
        problems = [str(err)]

    # Pass 2: OOV of valid / test values, occupied hash buckets on train.
    oov = {f.name: np.zeros((3, 2), np.int64) for f in schema.features if f.kind in (FeatureKind.CATEGORICAL, FeatureKind.MULTI)}
    used = {f.name: np.zeros(f.buckets, bool) for f in schema.features
            if f.kind in (FeatureKind.HASHED, FeatureKind.CROSSED) and f.buckets <= _BITMAP_LIMIT}
    cols = encoder.slot_columns()
    for b in scan_stream(schema, files, stats.batch_rows, "inspect 2/2", options.progress, total=int(stats.rows.sum())):
        x = encoder.transform(b.table)  # (n, S)
        for f, sl in zip(schema.features, cols):
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
    summary: dict[str, Any] = {"dataset": schema.name, "files": [str(f.path.name) for f in files], "domains": {}, "features": {}, "problems": problems}
    for d, dom in enumerate(doms):
        summary["domains"][dom] = {
            s: {"rows": int(stats.rows[i, d]), "positive_rate": _rate(stats.positives[i, d], stats.rows[i, d])} for i, s in enumerate(SPLITS)
        }
    per_dom_rows = stats.rows.sum(axis=0)
    for f in schema.features:
        enc = encoder.encoders_[f.name]
        info: dict[str, Any] = {
            "kind": f.kind.value,
            "missing_rate": _rate(stats.missing[f.name].sum(), per_dom_rows.sum()),
            "missing_rate_per_domain": {dom: _rate(stats.missing[f.name][d], per_dom_rows[d]) for d, dom in enumerate(doms)},
        }
        if f.kind in (FeatureKind.CATEGORICAL, FeatureKind.MULTI):
            info["distinct_train_values"] = stats.distinct.get(f.name, 0)
            info["vocabulary"] = len(enc.vocab_)  # type: ignore[union-attr]
            for i, s in enumerate(SPLITS[1:], start=1):
                info[f"oov_rate_{s}"] = _rate(oov[f.name][i, 1], oov[f.name][i, 0])
            if isinstance(enc, MultiEncoder):
                info["cells_cut_at_max_len"] = stats.truncated.get(f.name, 0)
        elif isinstance(enc, NumericBucketizer):
            info["buckets"] = len(enc.boundaries_) + 1
            info["finite_train_values"] = stats.finite.get(f.name, 0)
        elif isinstance(enc, (HashedEncoder, CrossedEncoder)):
            info["buckets"] = enc.buckets
            if f.name in used:
                info["buckets_used_in_train"] = int(used[f.name].sum())
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
    lines = [f"# Dataset {summary['dataset']}", "", f"Files: {len(summary['files'])} ({', '.join(summary['files'][:5])}{' …' if len(summary['files']) > 5 else ''})", ""]
    lines += ["## Domains", "", "| domain | " + " | ".join(f"{s} rows | {s} positive" for s in SPLITS) + " |",
              "|---|" + "---:|" * (2 * len(SPLITS))]
    for dom in doms:
        cells = [f"{summary['domains'][dom][s]['rows']:,} | {_pct(summary['domains'][dom][s]['positive_rate'])}" for s in SPLITS]
        lines.append(f"| {dom} | " + " | ".join(cells) + " |")
    lines += ["", "## Features", "", "| feature | kind | missing | " + " | ".join(f"missing {d}" for d in doms) + " | cardinality | OOV valid | OOV test |",
              "|---|---|" + "---:|" * (len(doms) + 4)]
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
        lines.append(f"| {name} | {f['kind']} | {_pct(f['missing_rate'])} | {per_dom} | {card} | {_pct(f.get('oov_rate_valid'))} | {_pct(f.get('oov_rate_test'))} |")
    lines += ["", "## Problems", ""]
    lines += [f"- {p}" for p in summary["problems"]] or ["None found."]
    lines += ["", "![rows and label rate per domain](domains.png)", "", "![missing and OOV rates per feature](features.png)", ""]
    return "\n".join(lines)


def _plots(summary: dict[str, Any], doms: list[str], domains_png: Path, features_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(doms))
    w = 0.8 / len(SPLITS)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, s in enumerate(SPLITS):
        rows = [summary["domains"][d][s]["rows"] for d in doms]
        rate = [summary["domains"][d][s]["positive_rate"] or 0.0 for d in doms]
        ax1.bar(x + (i - 1) * w, rows, w, label=s)
        ax2.bar(x + (i - 1) * w, rate, w, label=s)
    ax1.set_yscale("log")
    ax1.set_title("rows per domain")
    ax2.set_title("positive-label rate")
    for ax in (ax1, ax2):
        ax.set_xticks(x, doms)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(domains_png, dpi=110)
    plt.close(fig)

    names = list(summary["features"])
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    series = [("missing", [summary["features"][n]["missing_rate"] or 0.0 for n in names]),
              ("OOV valid", [summary["features"][n].get("oov_rate_valid") or 0.0 for n in names]),
              ("OOV test", [summary["features"][n].get("oov_rate_test") or 0.0 for n in names])]
    h = 0.8 / len(series)
    for i, (label, vals) in enumerate(series):
        ax.barh(y + (i - 1) * h, vals, h, label=label)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("share of rows / values")
    ax.set_title("missing values and out-of-vocabulary rates")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(features_png, dpi=110)
    plt.close(fig)
