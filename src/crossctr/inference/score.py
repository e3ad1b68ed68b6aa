"""Score encoded rows without autograd: one model (`score`), or a run's members by route (`route_scores`).

Attention weights a model returns in `extras` are averaged per domain on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from crossctr.data.dataset import EncodedSplit, iterate_batches

__all__ = ["Scores", "score", "route_scores"]


@dataclass
class Scores:
    prob: np.ndarray  # (N,) click probabilities
    # name -> (n_domains, F): mean attention weight per feature over each domain's rows
    attention: dict[str, np.ndarray]
    tasks: np.ndarray | None = None  # (N, T) extra-label probabilities of a multi-task model


@torch.inference_mode()
def score(
    model: nn.Module, data: EncodedSplit, n_domains: int, batch_size: int = 8192, device: str | torch.device = "cpu"
) -> Scores:
    model.eval()
    probs: list[torch.Tensor] = []
    task_probs: list[torch.Tensor] = []
    att_sum: dict[str, torch.Tensor] = {}
    for batch in iterate_batches(data, batch_size, shuffle=False):
        batch = batch.to(device)
        out = model(batch)
        probs.append(torch.sigmoid(out.logits.float()).cpu())
        if out.task_logits is not None:
            task_probs.append(torch.sigmoid(out.task_logits.float()).cpu())
        for name, a in out.extras.items():
            if name.startswith("attention"):
                acc = att_sum.setdefault(name, torch.zeros(n_domains, a.shape[1], dtype=torch.float64))
                acc.index_add_(0, batch.domain.cpu(), a.double().cpu())
    counts = torch.bincount(data.domain, minlength=n_domains).double().clamp_min(1).unsqueeze(1)
    attention = {k: (v / counts).numpy() for k, v in att_sum.items()}
    prob = torch.cat(probs).numpy() if probs else np.zeros(0, dtype=np.float32)
    tasks = torch.cat(task_probs).numpy() if task_probs else None
    return Scores(prob, attention, tasks)


def route_scores(
    members: dict[str, nn.Module],
    route: dict[str, str],
    data: EncodedSplit,
    names: list[str],
    batch_size: int = 8192,
    device: Any = "cpu",
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """Score each domain's rows with the member its route names.

    Returns click probabilities (N,), attention (n_domains, F) per key, and the extra-task
    probabilities (N, T) of multi-task members (None when the members have no task heads).
    """
    prob = np.zeros(len(data), dtype=np.float64)
    tasks: np.ndarray | None = None
    attention: dict[str, np.ndarray] = {}
    dom = data.domain.numpy()
    for member, model in members.items():
        ks = [k for k, n in enumerate(names) if route[n] == member]
        rows = np.flatnonzero(np.isin(dom, ks))
        if len(rows) == 0:
            continue
        s = score(model, data.select(torch.from_numpy(rows)), len(names), batch_size, device)
        prob[rows] = s.prob
        if s.tasks is not None:
            if tasks is None:
                tasks = np.full((len(data), s.tasks.shape[1]), np.nan)
            tasks[rows] = s.tasks
        for key, att in s.attention.items():
            acc = attention.setdefault(key, np.full_like(att, np.nan))
            acc[ks] = att[ks]
    return prob, attention, tasks
