"""Reductions over the rows of each domain, without a Python loop over rows."""

from __future__ import annotations

import torch

__all__ = ["per_domain_mean"]


def per_domain_mean(values: torch.Tensor, domain: torch.Tensor, n_domains: int, global_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of `values` (B,) over the rows of each domain -> (n_domains,); 0 where a domain has no rows.

    Summing the result gives Σ_d mean_{i in d} v_i: every domain weighs the same whatever its size.

    `global_rows` (n_domains,): rows per domain of the global batch this batch is one
    data-parallel shard of (`Batch.domain_rows`). The means then divide by the global counts
    and are multiplied by B/B_r (global rows / shard rows): the result is this shard's share of
    the global per-domain means, expressed as a row-mean term, which the trainer's row-mean
    scaling (W · B_r / B) turns into an exact share of the global batch's value.
    """
    values = values.float()  # sums in fp32 even under bf16 autocast
    sums = torch.zeros(n_domains, dtype=values.dtype, device=values.device).index_add(0, domain, values)
    if global_rows is None:
        counts = torch.bincount(domain, minlength=n_domains).to(values.dtype)
        return sums / counts.clamp_min(1)
    g = global_rows.to(device=values.device, dtype=values.dtype)
    return sums / g.clamp_min(1) * (g.sum() / max(values.shape[0], 1))
