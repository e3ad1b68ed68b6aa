"""Reductions over the rows of each domain, without a Python loop over rows."""

from __future__ import annotations

import torch

__all__ = ["per_domain_mean"]


def per_domain_mean(values: torch.Tensor, domain: torch.Tensor, n_domains: int) -> torch.Tensor:
    """Mean of `values` (B,) over the rows of each domain -> (n_domains,); 0 where a domain has no rows.

    Summing the result gives Σ_d mean_{i in d} v_i: every domain weighs the same whatever its size.
    """
    sums = torch.zeros(n_domains, dtype=values.dtype, device=values.device).index_add(0, domain, values)
    counts = torch.bincount(domain, minlength=n_domains).to(values.dtype)
    return sums / counts.clamp_min(1)
