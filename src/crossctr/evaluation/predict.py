"""Score encoded rows without autograd, and collect per-domain attention weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crossctr.data.dataset import EncodedSplit, iterate_batches

__all__ = ["Scores", "score"]


@dataclass
class Scores:
    prob: np.ndarray  # (N,) click probabilities
    # name -> (n_domains, F): mean attention weight per feature over each domain's rows
    attention: dict[str, np.ndarray]
    tasks: np.ndarray | None = None  # (N, T) extra-label probabilities of a multi-task model


@torch.inference_mode()
def score(model: nn.Module, data: EncodedSplit, n_domains: int, batch_size: int = 8192, device: str | torch.device = "cpu") -> Scores:
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
