"""Wasserstein critic with gradient penalty (WDGRL, Shen et al. 2018).

A critic f (an MLP, kept 1-Lipschitz by a gradient penalty) estimates the Wasserstein-1
distance between two sets of representations: W(P, Q) ≈ mean f(P) − mean f(Q). The critic
maximises  W − γ·GP  on detached features; the feature networks see W through a frozen copy
of the critic, so one backward pass trains both sides without either moving the other.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["Critic", "gradient_penalty"]


class Critic(nn.Module):
    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # (B,)

    def distance(self, p: torch.Tensor, q: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """mean f(p) − mean f(q); `frozen` evaluates f with detached weights (gradients reach p, q only)."""
        if frozen:
            params = {k: v.detach() for k, v in self.named_parameters()}
            return functional_call(self, params, (p,)).mean() - functional_call(self, params, (q,)).mean()
        return self(p).mean() - self(q).mean()


def gradient_penalty(critic: Critic, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """E[(||∇f(x̂)|| − 1)²] at random points x̂ between paired rows of p and q (p, q detached)."""
    n = min(len(p), len(q))
    alpha = torch.rand(n, 1, device=p.device, dtype=p.dtype)
    x = (alpha * p[:n] + (1 - alpha) * q[:n]).requires_grad_(True)  # (n, H)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((grad.norm(dim=1) - 1) ** 2).mean()
