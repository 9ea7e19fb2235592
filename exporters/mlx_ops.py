"""The `mlx` target's op table: one core ATen op (after run_decompositions()) -> one MLX expression.

Each entry takes the op's arguments in its schema's order, defaults filled (keyword-only ones last), and
returns an MLX array, a tuple of them, or a Python number (symbolic sizes). The lowering (exporters.mlx) casts
every tensor result to the dtype torch recorded for the node, so an entry need not reproduce torch's type
promotion. An op missing here is a ConversionError naming it and its source line.
"""
from __future__ import annotations

import math
import operator

import mlx.core as mx
import torch

DTYPES = {torch.float32: mx.float32, torch.float16: mx.float16, torch.bfloat16: mx.bfloat16,
          torch.int64: mx.int64, torch.int32: mx.int32, torch.int16: mx.int16, torch.int8: mx.int8,
          torch.uint8: mx.uint8, torch.bool: mx.bool_}
BIG = 2**62  # an end index this large means "to the end" (torch writes sys.maxsize)


class Unsupported(Exception):
    """An op in the table that cannot express this use of it (the lowering names the op and source line)."""


def _axes(dims, ndim):
    return list(range(ndim)) if dims is None or dims == [] else [d % ndim for d in dims]


def _slice(x, dim, start, end, step):
    size = x.shape[dim]
    start, end, step = slice(start, min(end, BIG) if end is not None else None, step).indices(size)
    return x[(slice(None),) * (dim % x.ndim) + (slice(start, end, step),)]


def _expand(x, sizes):
    lead = len(sizes) - x.ndim
    return mx.broadcast_to(x, [x.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes)])


def _layer_norm(x, shape, w, b, eps):
    axes = list(range(x.ndim - len(shape), x.ndim))
    mean = mx.mean(x, axis=axes, keepdims=True)
    rstd = mx.rsqrt(mx.var(x, axis=axes, keepdims=True) + eps)
    y = (x - mean) * rstd
    return (y * w if w is not None else y) + (b if b is not None else 0), mean, rstd


def _group_norm(x, w, b, n, c, hw, groups, eps):
    g = x.reshape(n, groups, -1)
    mean, rstd = mx.mean(g, axis=-1, keepdims=True), mx.rsqrt(mx.var(g, axis=-1, keepdims=True) + eps)
    y = ((g - mean) * rstd).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    y = y * w.reshape(shape) if w is not None else y
    return (y + b.reshape(shape) if b is not None else y), mean.reshape(n, groups), rstd.reshape(n, groups)


def _batch_norm(x, w, b, mean, var, momentum, eps):
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) * mx.rsqrt(var.reshape(shape) + eps)
    y = y * w.reshape(shape) if w is not None else y
    return (y + b.reshape(shape) if b is not None else y), mx.zeros((0,)), mx.zeros((0,))


def _channels_last(x):
    return mx.moveaxis(x, 1, -1)


def _conv(x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    if transposed:
        raise Unsupported("transposed convolution")
    y = mx.conv_general(_channels_last(x), _channels_last(w), stride=stride, padding=padding,
                        kernel_dilation=dilation, groups=groups)
    y = mx.moveaxis(y, -1, 1)
    return y + b.reshape((1, -1) + (1,) * (y.ndim - 2)) if b is not None else y


def _windows(x, kernel, stride, padding, fill):
    """(N, C, H, W) -> (N, C, Ho, Wo, kh * kw): every pooling window, padded with `fill` (strided slices)."""
    stride = stride or kernel
    if any(padding):
        x = mx.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=fill)
    h, w = x.shape[2:]
    ho, wo = (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1
    return mx.stack([x[:, :, i:i + stride[0] * (ho - 1) + 1:stride[0], j:j + stride[1] * (wo - 1) + 1:stride[1]]
                     for i in range(kernel[0]) for j in range(kernel[1])], axis=-1)


def _max_pool(x, kernel, stride, padding, dilation, ceil_mode):
    if ceil_mode or any(d != 1 for d in dilation):
        raise Unsupported("max pooling with ceil_mode or dilation")
    win = _windows(x, kernel, stride, padding, -math.inf)
    return mx.max(win, axis=-1), mx.zeros((0,))  # the indices are never read in inference


def _avg_pool(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
    if ceil_mode or (any(padding) and not count_include_pad):
        raise Unsupported("average pooling with ceil_mode or count_include_pad=False")
    win = _windows(x, kernel, stride, padding, 0.0)
    return mx.sum(win, axis=-1) / (divisor or kernel[0] * kernel[1])


def _upsample_nearest(x, size, scales):
    out = size or [int(d * s) for d, s in zip(x.shape[2:], scales)]
    for axis, (d, o) in enumerate(zip(x.shape[2:], out), start=2):
        if o % d:
            raise Unsupported("nearest upsampling by a non-integer factor")
        x = mx.repeat(x, o // d, axis=axis)
    return x


def _index(x, indices):
    return x[tuple(slice(None) if i is None else i for i in indices)]


def _split(x, sizes, dim):
    cuts, at = [], 0
    for s in sizes[:-1]:
        at += s
        cuts.append(at)
    return tuple(mx.split(x, cuts, axis=dim))


def _squeeze(x, dims):
    return mx.squeeze(x, [d % x.ndim for d in dims if x.shape[d] == 1]) if dims else x


def _gelu(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + mx.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + mx.erf(x / math.sqrt(2)))


def _vector_norm(x, ord, dims, keepdim, dtype):
    axes = _axes(dims, x.ndim)
    if ord == 2:
        return mx.sqrt(mx.sum(x * x, axis=axes, keepdims=keepdim))
    if ord == 1:
        return mx.sum(mx.abs(x), axis=axes, keepdims=keepdim)
    if ord == math.inf:
        return mx.max(mx.abs(x), axis=axes, keepdims=keepdim)
    return mx.power(mx.sum(mx.abs(x) ** ord, axis=axes, keepdims=keepdim), 1.0 / ord)


def _div(x, y, rounding_mode=None):
    if rounding_mode == "floor":
        return mx.floor_divide(x, y)
    if rounding_mode == "trunc":
        q = mx.divide(x, y)
        return mx.where(q < 0, mx.ceil(q), mx.floor(q))
    return mx.divide(x, y)


def _like(x, value, *_):
    return mx.full(x.shape, value, x.dtype)


def _bool_or(logical, bitwise):
    return lambda x, y: logical(x, y) if x.dtype == mx.bool_ else bitwise(x, y)


def _ident(x, *_):
    return x


def _nothing(*_):
    return None


OPS = {
    # arithmetic
    "add.Tensor": lambda x, y, alpha=1: x + (y * alpha if alpha != 1 else y),
    "sub.Tensor": lambda x, y, alpha=1: x - (y * alpha if alpha != 1 else y),
    "mul.Tensor": lambda x, y: x * y, "mul.Scalar": lambda x, y: x * y,
    "div.Tensor": _div, "div.Tensor_mode": _div,
    "remainder.Scalar": mx.remainder, "remainder.Tensor": mx.remainder,
    "pow.Tensor_Scalar": mx.power, "pow.Tensor_Tensor": mx.power,
    "maximum.default": mx.maximum, "minimum.default": mx.minimum,
    "neg.default": mx.negative, "abs.default": mx.abs, "reciprocal.default": mx.reciprocal,
    "sqrt.default": mx.sqrt, "rsqrt.default": mx.rsqrt, "exp.default": mx.exp, "log.default": mx.log,
    "sin.default": mx.sin, "cos.default": mx.cos, "tanh.default": mx.tanh, "sigmoid.default": mx.sigmoid,
    "erf.default": mx.erf, "erfinv.default": mx.erfinv, "floor.default": mx.floor, "ceil.default": mx.ceil,
    "relu.default": lambda x: mx.maximum(x, 0), "gelu.default": _gelu,
    "clamp.default": lambda x, lo=None, hi=None: mx.clip(x, lo, hi),
    "clamp.Tensor": lambda x, lo=None, hi=None: mx.clip(x, lo, hi),
    # comparisons and logic
    "eq.Scalar": mx.equal, "eq.Tensor": mx.equal, "ne.Scalar": mx.not_equal, "ne.Tensor": mx.not_equal,
    "lt.Scalar": mx.less, "lt.Tensor": mx.less, "le.Scalar": mx.less_equal, "le.Tensor": mx.less_equal,
    "gt.Scalar": mx.greater, "gt.Tensor": mx.greater, "ge.Scalar": mx.greater_equal,
    "ge.Tensor": mx.greater_equal,
    "logical_and.default": mx.logical_and, "logical_or.default": mx.logical_or,
    "logical_not.default": mx.logical_not,
    "bitwise_and.Tensor": _bool_or(mx.logical_and, mx.bitwise_and),
    "bitwise_or.Tensor": _bool_or(mx.logical_or, mx.bitwise_or),
    "bitwise_not.default": lambda x: mx.logical_not(x) if x.dtype == mx.bool_ else mx.bitwise_invert(x),
    "where.self": mx.where,
    # reductions
    "sum.dim_IntList": lambda x, dims, keep=False, dtype=None: mx.sum(x, axis=_axes(dims, x.ndim), keepdims=keep),
    "sum.default": lambda x, dtype=None: mx.sum(x),
    "mean.dim": lambda x, dims, keep=False, dtype=None: mx.mean(x, axis=_axes(dims, x.ndim), keepdims=keep),
    "mean.default": lambda x, dtype=None: mx.mean(x),
    "amax.default": lambda x, dims=(), keep=False: mx.max(x, axis=_axes(dims, x.ndim), keepdims=keep),
    "amin.default": lambda x, dims=(), keep=False: mx.min(x, axis=_axes(dims, x.ndim), keepdims=keep),
    "any.dim": lambda x, dim, keep=False: mx.any(x, axis=dim, keepdims=keep),
    "any.default": lambda x: mx.any(x),
    "argmax.default": lambda x, dim=None, keep=False: mx.argmax(x, axis=dim, keepdims=keep),
    "cumsum.default": lambda x, dim, dtype=None: mx.cumsum(x, axis=dim),
    "linalg_vector_norm.default": _vector_norm,
    "_softmax.default": lambda x, dim, half_to_float: mx.softmax(x, axis=dim, precise=True),
    "_log_softmax.default": lambda x, dim, half_to_float: x - mx.logsumexp(x, axis=dim, keepdims=True),
    # linear algebra and networks
    "mm.default": mx.matmul, "bmm.default": mx.matmul,
    "addmm.default": lambda c, a, b, beta=1, alpha=1: mx.addmm(c, a, b, alpha=alpha, beta=beta),
    "convolution.default": _conv,
    "native_layer_norm.default": _layer_norm, "native_group_norm.default": _group_norm,
    "_native_batch_norm_legit_no_training.default": _batch_norm,
    "max_pool2d_with_indices.default": _max_pool, "avg_pool2d.default": _avg_pool,
    "upsample_nearest2d.vec": _upsample_nearest,
    "embedding.default": lambda w, idx, *_: mx.take(w, idx, axis=0),
    # shapes and indexing
    "view.default": mx.reshape, "_unsafe_view.default": mx.reshape, "reshape.default": mx.reshape,
    "permute.default": mx.transpose, "expand.default": lambda x, sizes, implicit=False: _expand(x, sizes),
    "unsqueeze.default": mx.expand_dims, "squeeze.dims": _squeeze,
    "squeeze.dim": lambda x, dim: _squeeze(x, [dim]),
    "slice.Tensor": _slice, "select.int": lambda x, dim, i: mx.take(x, i % x.shape[dim], axis=dim),
    "cat.default": lambda xs, dim=0: mx.concatenate(list(xs), axis=dim),
    "split_with_sizes.default": _split, "index.Tensor": _index,
    "gather.default": lambda x, dim, idx, sparse=False: mx.take_along_axis(x, idx, axis=dim),
    "index_select.default": lambda x, dim, idx: mx.take(x, idx, axis=dim),
    "constant_pad_nd.default": lambda x, pad, value=0: mx.pad(
        x, [(0, 0)] * (x.ndim - len(pad) // 2) + [(pad[i], pad[i + 1]) for i in range(len(pad) - 2, -1, -2)],
        constant_values=value),
    # creation, copies, casts (the cast to the node's dtype follows every op)
    "full.default": lambda size, value, *_: mx.full(size, value),
    "full_like.default": _like,
    "scalar_tensor.default": lambda s, *_: mx.array(s),
    "arange.start_step": lambda start, end, step=1, *_: mx.arange(start, end, step),
    "arange.default": lambda end, *_: mx.arange(end),
    "_to_copy.default": _ident, "clone.default": _ident, "alias.default": _ident,
    "lift_fresh_copy.default": _ident, "detach.default": _ident,
    "copy.default": lambda dst, src, non_blocking=False: mx.broadcast_to(src, dst.shape),
    # symbolic sizes and checks
    "sym_size.int": lambda x, dim: x.shape[dim],
    "_assert_tensor_metadata.default": _nothing, "_assert_scalar.default": _nothing,
    "sym_constrain_range_for_size.default": _nothing,
}
# ops that accumulate (reductions, normalizations, softmax, scans): in an fp16 program their fp16 inputs are
# taken to fp32 and the result cast back, as the other fp16 targets' kernels accumulate in fp32 (MLX's CPU
# cumsum adds in fp16: 4096 x 0.1 sums to 256)
ACCUMULATE = {"sum.dim_IntList", "sum.default", "mean.dim", "mean.default", "cumsum.default",
              "linalg_vector_norm.default", "_softmax.default", "_log_softmax.default", "native_layer_norm.default",
              "native_group_norm.default", "_native_batch_norm_legit_no_training.default"}
PYTHON = {operator.getitem: operator.getitem, operator.mul: operator.mul, operator.add: operator.add,
          operator.sub: operator.sub, operator.floordiv: operator.floordiv, operator.truediv: operator.truediv,
          operator.neg: operator.neg, math.ceil: math.ceil, math.floor: math.floor}


def op_name(target) -> str:
    """'add.Tensor' for aten.add.Tensor; the Python name for an operator on sizes."""
    if isinstance(target, torch._ops.OpOverload):
        return f"{target._schema.name.split('::')[-1]}.{target._overloadname}"
    return getattr(target, "__name__", str(target))
