"""Tables and plots a person reads: per-domain AUC tables (Markdown) and attention heatmaps (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["markdown_table", "auc_table", "attention_heatmap", "learning_curves"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "–" if np.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def auc_table(results: dict[str, dict[str, dict[str, float]]], domains: Sequence[str], metric: str = "auc", rows_of: str = "test") -> str:
    """results: method -> domain -> metrics; one row per method, one column per domain.

    `rows_of` names the rows scored, in the header: "test" only for a run's test split.
    """
    rows = []
    for method, per_domain in results.items():
        rows.append([method, *[float(per_domain.get(d, {}).get(metric) or np.nan) for d in domains]])
    return markdown_table([f"{metric.upper()} ({rows_of})", *domains], rows)


def attention_heatmap(weights: np.ndarray, domains: Sequence[str], groups: Sequence[str], path: str | Path, title: str) -> Path:
    """weights: (n_domains, n_groups) mean attention; one row per domain, as the paper's Figure 4.

    Two panels: the weights as learned, and each domain's weights minus that domain's mean.
    A domain-wide offset (one platform's attention all a little higher) otherwise drowns the
    contrast between feature groups that the figure is for.
    """
    path = Path(path)
    weights = np.asarray(weights, dtype=float)
    centred = weights - np.nanmean(weights, axis=1, keepdims=True)
    fig, axes = plt.subplots(1, 2, figsize=(2.6 * len(groups) + 3, 0.6 * len(domains) + 1.8))
    panels = [(weights, "Reds", "mean attention weight", "{:.3f}"), (centred, "RdBu_r", "minus the domain's mean", "{:+.4f}")]
    for ax, (values, cmap, label, fmt) in zip(axes, panels):
        lim = np.nanmax(np.abs(values)) or 1.0
        kw = {"vmin": -lim, "vmax": lim} if cmap == "RdBu_r" else {}
        im = ax.imshow(values, cmap=cmap, aspect="auto", **kw)
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        ax.set_yticks(range(len(domains)), domains)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label=label)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def learning_curves(history: dict[str, list[dict]], path: str | Path, title: str) -> Path:
    """Per-domain learning curves of a run from its history.json, one row of panels per fit.

    history: fit name (joint, a self-train domain, pretrain / finetune) -> epoch records with
    `train_loss` (named loss terms) and `valid` (domain -> auc, logloss). Panels: the training
    click loss, then each domain's validation AUC and log loss by epoch; the best epoch (by the
    fit's selection AUC) is marked.
    """
    path = Path(path)
    fits = [(name, recs) for name, recs in history.items() if recs]
    if not fits:
        raise ValueError("history.json holds no epochs to draw")
    names = list(dict.fromkeys(d for _, recs in fits for d in recs[0]["valid"] if d != "overall"))
    colour = {d: f"C{i % 10}" for i, d in enumerate(names)} | {"overall": "black"}  # a domain keeps its colour in every panel
    fig, axes = plt.subplots(len(fits), 3, figsize=(13, 3.2 * len(fits) + 0.8), squeeze=False)
    for row, (name, recs) in zip(axes, fits):
        epochs = [r["epoch"] for r in recs]
        sel = [r.get("valid_selection_auc", r.get("valid_mean_auc", np.nan)) for r in recs]
        best = epochs[int(np.nanargmax(sel))] if not np.all(np.isnan(np.asarray(sel, dtype=float))) else None
        terms = [t for t in recs[0]["train_loss"] if t in ("click", "tasks")]
        for t in terms:
            row[0].plot(epochs, [r["train_loss"].get(t, np.nan) for r in recs], marker="o", label=t, color="dimgray" if t == "click" else "grey")
        row[0].set_title(f"{name}: training loss (mean per batch)", fontsize=10)
        row[0].set_ylabel("loss")
        domains = [d for d in recs[0]["valid"] if d != "overall"] + (["overall"] if len(recs[0]["valid"]) > 2 else [])
        for ax, metric, label in ((row[1], "auc", "validation AUC (higher is better)"), (row[2], "logloss", "validation log loss (lower is better)")):
            for d in domains:
                style = {"color": colour[d], "linestyle": "--" if d == "overall" else "-"}
                ax.plot(epochs, [r["valid"].get(d, {}).get(metric, np.nan) for r in recs], marker="o", label=d, **style)
            ax.set_title(f"{name}: {label}", fontsize=10)
            ax.set_ylabel(metric.upper() if metric == "auc" else "log loss")
        for ax in row:
            ax.set_xlabel("epoch")
            ax.set_xticks(epochs)
            if best is not None:
                ax.axvline(best, color="grey", linewidth=0.8, linestyle=":")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, title=None if ax is row[0] else "domain", title_fontsize=8)
    fig.suptitle(f"{title}\n(dotted line: the epoch whose weights the run kept)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
