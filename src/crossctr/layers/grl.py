"""Gradient reversal (Ganin et al. 2016, DANN).

Identity on the forward pass, multiplies the gradient by −scale on the backward pass, so a
domain classifier placed after it is trained to classify while the features before it are
trained to confuse it, in one ordinary backward.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.autograd import Function

__all__ = ["grad_reverse", "GradientReversal"]


class _GradReverse(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)  # a new view, so autograd records this node

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor, None]:
        (grad,) = grad_outputs  # forward has one output
        return -ctx.scale * grad, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Returns x unchanged; its gradient flows back multiplied by −scale.

    Example:
        >>> import torch
        >>> x = torch.ones(2, requires_grad=True)
        >>> grad_reverse(x, 0.5).sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000])
    """
    return _GradReverse.apply(x, float(scale))


class GradientReversal(nn.Module):
    """Module form of grad_reverse; `scale` (DANN's λ) may be changed during training.

    Example:
        >>> import torch
        >>> GradientReversal(1.0)(torch.zeros(3)).shape
        torch.Size([3])
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if scale < 0:
            raise ValueError(f"scale must be >= 0 (the sign is already reversed), got {scale!r}")
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
