"""AUC and log loss per domain and overall: the numbers every table in the paper reports."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

__all__ = ["binary_metrics", "domain_metrics", "mean_auc"]


def binary_metrics(label: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """AUC (NaN when only one class is present, so it cannot be computed) and log loss."""
    out = {"rows": float(len(label)), "ctr": float(label.mean()) if len(label) else float("nan")}
    both = len(label) > 0 and 0 < label.sum() < len(label)
    out["auc"] = float(roc_auc_score(label, prob)) if both else float("nan")
    out["logloss"] = (
        float(log_loss(label, np.clip(prob, 1e-7, 1 - 1e-7), labels=[0, 1])) if len(label) else float("nan")
    )
    return out


def domain_metrics(
    label: np.ndarray, prob: np.ndarray, domain: np.ndarray, names: list[str]
) -> dict[str, dict[str, float]]:
    """{domain name: metrics} for every domain with rows, plus 'overall'."""
    out = {}
    for k, name in enumerate(names):
        rows = domain == k
        if rows.any():
            out[name] = binary_metrics(label[rows], prob[rows])
    out["overall"] = binary_metrics(label, prob)
    return out


def mean_auc(metrics: dict[str, dict[str, float]]) -> float:
    """Mean AUC over domains (not 'overall'): the early-stopping criterion, each domain weighs the same."""
    aucs = [m["auc"] for k, m in metrics.items() if k != "overall" and not np.isnan(m["auc"])]
    return float(np.mean(aucs)) if aucs else float("nan")
