"""Tables and plots a person reads: per-domain AUC tables (Markdown) and attention heatmaps (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402 - after matplotlib.use, which must come first

__all__ = ["markdown_table", "auc_table", "attention_heatmap", "learning_curves"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "–" if np.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def auc_table(
    results: dict[str, dict[str, dict[str, float]]], domains: Sequence[str], metric: str = "auc", rows_of: str = "test"
) -> str:
    """results: method -> domain -> metrics; one row per method, one column per domain.

    `rows_of` names the rows scored, in the header: "test" only for a run's test split.
    """
    rows = []
    for method, per_domain in results.items():
        rows.append([method, *[float(per_domain.get(d, {}).get(metric) or np.nan) for d in domains]])
    return markdown_table([f"{metric.upper()} ({rows_of})", *domains], rows)


def attention_heatmap(
    weights: np.ndarray, domains: Sequence[str], groups: Sequence[str], path: str | Path, title: str
) -> Path:
    """weights: (n_domains, n_groups) mean attention; one row per domain, as the paper's Figure 4.

    The main panel is the contrast: each domain's weight on a feature group minus that
    domain's mean over groups, so red means "this domain attends to this group more than to
    its others". The learned weights themselves differ mostly by a per-domain level (one
    platform's attention all a little higher), which would drown that contrast; the level is
    shown in a narrow panel of its own.
    """
    path = Path(path)
    weights = np.asarray(weights, dtype=float)  # (D, G)
    level = np.nanmean(weights, axis=1, keepdims=True)  # (D, 1)
    contrast = weights - level  # (D, G)
    lim = float(np.nanmax(np.abs(contrast))) if np.isfinite(contrast).any() else 0.0
    lim = lim or 1.0
    # Contrasts are often ~1e-3: show them in the unit that gives 1-3 significant digits.
    exp = int(np.floor(np.log10(lim))) if lim < 0.1 else 0
    scale = 10.0**-exp
    unit = f" (×10$^{{{exp}}}$)" if exp else ""
    n_d, n_g = weights.shape
    fig = plt.figure(figsize=(1.25 * n_g + 4.2, 0.55 * n_d + 2.6))
    grid = fig.add_gridspec(1, 3, width_ratios=[n_g, 1.1, 0.35], wspace=0.08)
    ax, ax_level, cax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1]), fig.add_subplot(grid[2])

    im = ax.imshow(contrast * scale, cmap="RdBu_r", vmin=-lim * scale, vmax=lim * scale, aspect="auto")
    for i in range(n_d):
        for j in range(n_g):
            v = contrast[i, j] * scale
            if np.isfinite(v):
                strong = abs(v) > 0.55 * lim * scale  # dark cell: white text
                text = f"{v:+.1f}" if exp else f"{v:+.3f}"
                text = text[1:] if float(text) == 0 else text  # no "-0.0"
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if strong else "black")
    ax.set_xticks(range(n_g), groups, rotation=30, ha="right")
    ax.set_yticks(range(n_d), domains)
    ax.set_xlabel("feature group")
    ax.set_ylabel("domain")
    ax.set_title("weight minus the domain's mean weight", fontsize=10)
    fig.colorbar(im, cax=cax, label=f"weight − domain's mean{unit}")

    ax_level.imshow(
        level,
        cmap="Greys",
        aspect="auto",
        vmin=np.nanmin(level) - 0.5 * (np.nanmax(level) - np.nanmin(level) + 1e-9),
        vmax=np.nanmax(level) + 1e-9,
    )
    for i in range(n_d):
        ax_level.text(
            0,
            i,
            f"{level[i, 0]:.3f}",
            ha="center",
            va="center",
            fontsize=9,
            color="white" if level[i, 0] > np.nanmean(level) else "black",
        )
    ax_level.set_xticks([0], ["mean"])
    ax_level.set_yticks([])
    ax_level.set_title("domain's\nmean weight", fontsize=9)

    fig.suptitle(title, fontsize=11, y=0.99)
    fig.text(
        0.5,
        0.90,
        "each cell: mean attention weight of the group's features on the domain's test rows, minus that domain's mean; "
        "red = attended more than the domain's other groups",
        ha="center",
        fontsize=8,
        color="dimgray",
        wrap=True,
    )
    fig.subplots_adjust(left=0.12, right=0.9, top=0.78, bottom=0.25)
    fig.savefig(path, dpi=120, bbox_inches="tight")
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
    colour = {d: f"C{i % 10}" for i, d in enumerate(names)} | {
        "overall": "black"
    }  # a domain keeps its colour in every panel
    fig, axes = plt.subplots(len(fits), 3, figsize=(13, 3.2 * len(fits) + 0.8), squeeze=False)
    for row, (name, recs) in zip(axes, fits, strict=False):
        epochs = [r["epoch"] for r in recs]
        sel = [r.get("valid_selection_auc", r.get("valid_mean_auc", np.nan)) for r in recs]
        best = epochs[int(np.nanargmax(sel))] if not np.all(np.isnan(np.asarray(sel, dtype=float))) else None
        terms = [t for t in recs[0]["train_loss"] if t in ("click", "tasks")]
        for t in terms:
            row[0].plot(
                epochs,
                [r["train_loss"].get(t, np.nan) for r in recs],
                marker="o",
                label=t,
                color="dimgray" if t == "click" else "grey",
            )
        row[0].set_title(f"{name}: training loss (mean per batch)", fontsize=10)
        row[0].set_ylabel("loss")
        domains = [d for d in recs[0]["valid"] if d != "overall"] + (["overall"] if len(recs[0]["valid"]) > 2 else [])
        for ax, metric, label in (
            (row[1], "auc", "validation AUC (higher is better)"),
            (row[2], "logloss", "validation log loss (lower is better)"),
        ):
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
