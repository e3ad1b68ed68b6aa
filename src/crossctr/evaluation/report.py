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


def auc_table(results: dict[str, dict[str, dict[str, float]]], domains: Sequence[str], metric: str = "auc") -> str:
    """results: method -> domain -> metrics; one row per method, one column per domain."""
    rows = []
    for method, per_domain in results.items():
        rows.append([method, *[float(per_domain.get(d, {}).get(metric) or np.nan) for d in domains]])
    return markdown_table([f"{metric.upper()} (test)", *domains], rows)


def attention_heatmap(weights: np.ndarray, domains: Sequence[str], groups: Sequence[str], path: str | Path, title: str) -> Path:
    """weights: (n_domains, n_groups) mean attention; one row per domain, as the paper's Figure 4."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(1.3 * len(groups) + 2, 0.6 * len(domains) + 1.6))
    im = ax.imshow(weights, cmap="Reds", aspect="auto")
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_yticks(range(len(domains)), domains)
    for i in range(weights.shape[0]):
        for j in range(weights.shape[1]):
            ax.text(j, i, f"{weights[i, j]:.3f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="mean attention weight")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
