"""Tables and plots a person reads: per-domain AUC tables (Markdown) and attention heatmaps (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["markdown_table", "auc_table", "attention_heatmap"]


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
