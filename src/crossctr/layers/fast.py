"""CPU speed workarounds, in one place: model files call these and read like their equations.

Each function computes exactly what its plain PyTorch counterpart computes; only how differs.

`linear(x, W, b) = x Wᵀ + b` is `F.linear`, except that on CPU in float32 the three products of
a training step (forward, input gradient, weight gradient) go through oneDNN instead of the
BLAS that PyTorch picks (MKL). Same fp32 products, only the order of the partial sums differs.
MKL runs a slower code path on AMD processors: on this project's machines (AMD EPYC, AVX-512)
one core does 4096 × 1728 @ 1728 × 512 at ~100 GFLOP/s through MKL and ~220 through oneDNN;
the FCN's first layer is most of a model's time, and MKL is slower still on the skinny
(B, H) @ (H, n_domains) shape of a domain discriminator. Everywhere else (GPU, bf16, autocast,
graph export, tracing, torch.compile) it is plain `F.linear`. `Linear` is `nn.Linear` on it.

`rows_by_group(modules, x, group)` runs row i of x through modules[group[i]], each module on its
own rows only, and puts the outputs back in row order. Eagerly, the rows are grouped by one
argsort and each group is padded to a bucketed row count with copies of one of its rows (cut
off again, so they get no gradient): the matmul kernels see a few shapes, not a new one every
step. A new row count per step made oneDNN build and cache new primitives and grew the process
by ~0.5 GB per 100k rows on CPU. Padding is skipped for modules with BatchNorm (copies would
skew the batch statistics). Under graph export or tracing the same selection is written
without data-dependent Python control flow (nonzero -> index_select -> module -> index_copy;
an empty group is a no-op), so an exported graph does the same maths and work.

`autocast_input(x)` casts a tensor that several networks read to the autocast dtype once, so
under bf16 autocast each network and its backward do not each cast their own copy.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["linear", "Linear", "rows_by_group", "autocast_input"]

GroupFn = Callable[[Tensor], Sequence["Tensor | None"]]  # a module of rows: (n, ...) -> outputs, rows first


def _onednn_op() -> Any:
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):  # a build without oneDNN, or an op that moved
        return None


_ONEDNN_LINEAR = _onednn_op()
# Which fp32 products go through oneDNN. Scoring (no autograd): every shape; a training step: every
# shape on AVX-512, else outputs up to _ONEDNN_TRAIN_MAX_OUT wide. Measured on AMD EPYCs: with
# AVX-512 oneDNN ran every shape ~2.2x faster than MKL. AVX2 only, quiet machine: forward alone
# oneDNN was faster or level on every shape (8192 x 1728 -> 512 1.09x at 1 thread, 1.25x at 2;
# 512 -> 256 1.18-1.42x), but forward + backward went either way by shape (1536 -> 1536: MKL 539
# against 667 ms, 1728 -> 512: oneDNN 197 against 210, 2 threads). On the user's path
# (`benchmarks/speed.py --against`) this split trained DCN 1.09-1.36x faster than oneDNN
# everywhere and scored CNAN-AT ~9 % faster than MKL on the wide layers.
_ONEDNN_TRAIN_EVERY_SHAPE = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
_ONEDNN_TRAIN_MAX_OUT = 64  # attention units, discriminators


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
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        (grad,) = grad_outputs  # forward has one output
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()  # (M, N)
        gx = _mm_t(grad, weight.t()) if ctx.needs_input_grad[0] else None  # (M, K) = grad W
        gw = _mm_t(grad.t(), x.t()) if ctx.needs_input_grad[1] else None  # (N, K) = gradᵀ x
        gb = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None  # (N,)
        return gx, gw, gb


def _symbolic(x: Tensor) -> bool:
    """True while a graph is being exported, traced or compiled: use the plain, traceable ops."""
    if type(x) is not torch.Tensor:  # the fake or functional tensors of torch.export / ONNX export
        return True
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def _use_onednn(x: Tensor, weight: Tensor, training: bool) -> bool:
    if _ONEDNN_LINEAR is None or _symbolic(x):
        return False
    return (
        x.device.type == "cpu"
        and (not training or _ONEDNN_TRAIN_EVERY_SHAPE or weight.shape[0] <= _ONEDNN_TRAIN_MAX_OUT)
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
    training = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if not _use_onednn(x, weight, training):
        return F.linear(x, weight, bias)
    # oneDNN is fast on row-major operands (and their transposes, as backward uses them) but falls
    # back to a slow reference kernel on other strides, e.g. a column slice of a weight.
    x2 = x.reshape(-1, x.shape[-1]).contiguous()  # (M, K)
    weight = weight.contiguous()
    if training:
        y = _OneDNNLinear.apply(x2, weight, bias)
    else:
        y = _mm_t(x2, weight, bias)
    return y.reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same state_dict keys) computed by `linear`.

    `frozen=True` computes with detached weights: the gradient reaches x only (a term that
    must move its input but not this layer).

    Example:
        >>> Linear(3, 2)(torch.randn(4, 3)).shape
        torch.Size([4, 2])
    """

    def forward(self, x: Tensor, frozen: bool = False) -> Tensor:
        if frozen:
            return linear(x, self.weight.detach(), None if self.bias is None else self.bias.detach())
        return linear(x, self.weight, self.bias)


def _bucket(n: int) -> int:
    """The row count a group runs on: the next power of two up to 256, then a multiple of 256."""
    return 1 << (n - 1).bit_length() if n <= 256 else -(-n // 256) * 256


_ROWS_INTERACT: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _rows_interact(module: nn.Module) -> bool:
    """True when the module holds BatchNorm (rows change each other's output); found once per module."""
    if module not in _ROWS_INTERACT:
        _ROWS_INTERACT[module] = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    return _ROWS_INTERACT[module]


def rows_by_group(modules: Sequence[GroupFn], x: Tensor, group: Tensor, outputs: int = 1) -> tuple[Tensor | None, ...]:
    """Row i of x (B, ...) through modules[group[i]]; the first `outputs` outputs, each (B, ...) in row order.

    Each module returns a tuple of tensors (rows first) or None in place of a tensor; a None
    output stays None. Every module runs on its own group's rows only (none when it has none).

    Example:
        >>> out, = rows_by_group([lambda t: (t * 1,), lambda t: (t * 10,)], torch.ones(3, 1), torch.tensor([1, 0, 1]))
        >>> out.squeeze(1).tolist()
        [10.0, 1.0, 10.0]
    """
    if _symbolic(x):
        return _rows_by_group_traceable(modules, x, group, outputs)
    order = torch.argsort(group, stable=True)  # (B,) rows grouped
    sizes = torch.bincount(group, minlength=len(modules)).tolist()
    parts: list[list[Tensor | None]] = []
    for module, rows in zip(modules, order.split(sizes), strict=False):
        if n := rows.numel():
            pad = _bucket(n) - n if not (isinstance(module, nn.Module) and _rows_interact(module)) else 0
            res = module(x[torch.cat([rows, rows[:1].expand(pad)]) if pad else rows])[:outputs]
            parts.append([None if r is None else r[:n] for r in res])
    back = torch.empty_like(order).scatter_(
        0, order, torch.arange(order.numel(), device=order.device)
    )  # inverse permutation
    return tuple(None if col[0] is None else torch.cat(col)[back] for col in zip(*parts, strict=False))


def _rows_by_group_traceable(
    modules: Sequence[GroupFn], x: Tensor, group: Tensor, outputs: int
) -> tuple[Tensor | None, ...]:
    outs: list[Tensor | None] | None = None
    for k, module in enumerate(modules):
        rows = (group == k).nonzero().squeeze(1)  # (n_k,) positions, n_k data-dependent (0 allowed)
        res = module(x.index_select(0, rows))[:outputs]
        if outs is None:
            outs = [None if r is None else r.new_zeros((x.shape[0], *r.shape[1:])) for r in res]
        outs = [None if o is None or r is None else o.index_copy(0, rows, r) for o, r in zip(outs, res, strict=False)]
    return tuple(outs or ())


def autocast_input(x: Tensor) -> Tensor:
    """x in the autocast dtype when autocast is on (one cast for every network that reads it), else x."""
    if torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x
