"""One network of CNAN-AT: attention unit (eq. 1) then NN layers (eq. 2).

x_g = g_1 ⊕ … ⊕ g_n;  x_2 = cross(cross(x_g));  h = FCN(x_2);  o = h ⊕ x_2.
With `cross_layers=0` it is the Deep-only network (o = FCN(x_g)); with `stacking="parallel"`
the FCN reads x_g instead of x_2 (the original DCN layout), an option docs/design.md allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from crossctr.layers.attention import AttentionUnit
from crossctr.layers.cross import CrossNetwork
from crossctr.layers.fast import autocast_input
from crossctr.layers.mlp import MLP

__all__ = ["AttentiveNetwork"]


class AttentiveNetwork(nn.Module):
    def __init__(
        self,
        n_fields: int,
        emb_dim: int,
        *,
        attention: bool = True,
        attention_hidden: Sequence[int] = (64, 32),
        attention_activation: Literal["relu", "sigmoid"] = "relu",
        cross_layers: int = 2,
        deep: Sequence[int] = (512, 256),
        stacking: Literal["stacked", "parallel"] = "stacked",
        dropout: float = 0.0,
        norm: Literal["none", "batch", "layer"] = "none",
    ) -> None:
        super().__init__()
        in_dim = n_fields * emb_dim
        self.attention = AttentionUnit(emb_dim, attention_hidden, attention_activation) if attention else None
        self.cross = CrossNetwork(in_dim, cross_layers) if cross_layers > 0 else None
        self.stacking = stacking
        self.deep = MLP(in_dim, deep, dropout=dropout, batch_norm=norm == "batch", layer_norm=norm == "layer")
        self.out_dim = self.deep.out_dim + (in_dim if self.cross is not None else 0)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """e: (B, F, K) embeddings -> (o (B, out_dim), attention (B, F) or None, g (B, F, K))."""
        e = autocast_input(e)  # one cast, not one per layer: under autocast the whole network runs in its dtype
        if self.attention is not None:
            g, a = self.attention(e)  # (B, F, K), (B, F)
        else:
            g, a = e, None
        x0 = g.flatten(1)  # (B, F*K)
        if self.cross is None:
            return self.deep(x0), a, g
        x2 = self.cross(x0)  # (B, F*K)
        h = self.deep(x2 if self.stacking == "stacked" else x0)  # (B, H)
        return torch.cat([h, x2], dim=1), a, g  # (B, H + F*K)
