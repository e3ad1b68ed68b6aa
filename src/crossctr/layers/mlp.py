"""A fully connected stack of hidden layers: the paper's FCN (512 × 256, ReLU).

Its linear maps are `layers.fast.Linear` (nn.Linear with a faster CPU fp32 path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from crossctr.layers.fast import Linear

__all__ = ["MLP", "Activation", "make_activation"]

Activation = Literal["relu", "sigmoid", "tanh"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """Builds the activation module called `name`; raises ValueError listing the choices."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


class MLP(nn.Module):
    """Linear → (BatchNorm) → act → (Dropout) for every layer, the last one included.

    It is a hidden stack, not a predictor: heads are separate, so the output is activated.

    Args:
        in_dim: size of the input.
        hidden: sizes of the layers, e.g. (512, 256); empty means identity.
        activation: "relu" (paper), "sigmoid" or "tanh".
        dropout: dropout probability after each activation (0 disables it).
        batch_norm: insert BatchNorm1d after each Linear.
        layer_norm: insert LayerNorm after each Linear instead (per row: no batch statistics,
            so rows padded or grouped by domain do not change each other's output).

    Example:
        >>> import torch
        >>> MLP(8, (16, 4))(torch.zeros(3, 8)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        activation: Activation = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if batch_norm and layer_norm:
            raise ValueError("choose batch_norm or layer_norm, not both")
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim!r}")
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden sizes must all be >= 1, got {list(hidden)!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        make_activation(activation)  # validate once, before building anything
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(Linear(d, int(h)))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(h)))
            elif layer_norm:
                layers.append(nn.LayerNorm(int(h)))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = int(h)
        self.in_dim = in_dim
        self._out_dim = d
        self.net = nn.Sequential(*layers)

    @property
    def out_dim(self) -> int:
        """hidden[-1], or in_dim when hidden is empty."""
        return self._out_dim

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_dim) -> (B, out_dim)."""
        return self.net(x)
