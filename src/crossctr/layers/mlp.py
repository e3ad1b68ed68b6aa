"""A fully connected hidden tower: the paper's FCN (512 × 256, ReLU), and the linear map it runs on.

`linear(x, W, b) = x Wᵀ + b` is `F.linear`, except that on CPU in float32 the three products of
a training step (forward, input gradient, weight gradient) go through oneDNN instead of the
BLAS that PyTorch picks (MKL). Same fp32 products, only the order of the partial sums differs.
MKL runs a slower code path on AMD processors: on this project's machines (AMD EPYC, AVX-512)
one core does 4096 × 1728 @ 1728 × 512 at ~100 GFLOP/s through MKL and ~220 through oneDNN;
the FCN's first layer is most of a model's time. Everywhere else (GPU, bf16, autocast, graph
export, tracing, torch.compile) it is plain `F.linear`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["MLP", "Activation", "make_activation", "linear"]


def _onednn_op() -> Any:
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):  # a build without oneDNN, or an op that moved
        return None


_ONEDNN_LINEAR = _onednn_op()


def _mm_t(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """a bᵀ (+ bias) through oneDNN; a (M, K), b (N, K), either may be a transposed view."""
    return _ONEDNN_LINEAR(a, b, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm_t(x, weight, bias)  # (M, N) = x Wᵀ + b

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()  # (M, N)
        gx = _mm_t(grad, weight.t()) if ctx.needs_input_grad[0] else None  # (M, K) = grad W
        gw = _mm_t(grad.t(), x.t()) if ctx.needs_input_grad[1] else None  # (N, K) = gradᵀ x
        gb = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None  # (N,)
        return gx, gw, gb


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    if _ONEDNN_LINEAR is None or type(x) is not torch.Tensor:  # eager tensors only: not the fake or
        return False  # symbolic ones of torch.export / ONNX export, nor tensor subclasses
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., K), weight (N, K), bias (N,) -> x Wᵀ + b (..., N); `F.linear` with a faster CPU fp32 path.

    Example:
        >>> x, w, b = torch.randn(4, 3), torch.randn(2, 3), torch.randn(2)
        >>> torch.allclose(linear(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-6)
        True
    """
    if not _use_onednn(x, weight):
        return F.linear(x, weight, bias)
    # oneDNN is fast on row-major operands (and their transposes, as backward uses them) but falls
    # back to a slow reference kernel on other strides, e.g. a column slice of a weight.
    x2 = x.reshape(-1, x.shape[-1]).contiguous()  # (M, K)
    weight = weight.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        y = _OneDNNLinear.apply(x2, weight, bias)
    else:
        y = _mm_t(x2, weight, bias)
    return y.reshape(*x.shape[:-1], weight.shape[0])

Activation = Literal["relu", "sigmoid", "tanh"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """Builds the activation module called `name`; raises ValueError listing the choices."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


class MLP(nn.Module):
    """Linear → (BatchNorm) → act → (Dropout) for every layer, the last one included.

    It is a hidden tower, not a predictor: heads are separate, so the output is activated.

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
            layers.append(nn.Linear(d, int(h)))
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
        for layer in self.net:  # 2 to 4 modules per hidden size; Linear through `linear`
            x = linear(x, layer.weight, layer.bias) if type(layer) is nn.Linear else layer(x)
        return x
