"""NumPy versions of MIL ops, for the off-device CoreML evaluator (exporters.coreml_numpy), and CUSTOM: the
table of them, by MIL op type, that the interpreter prefers to an op's own `value_inference`.

Each function takes a MIL Operation whose input Vars are bound to values (`var.val`) and returns the op's
output value(s). They cover ops that have no `value_inference` in coremltools (conv, pooling, norms...)
and ops whose `value_inference` is slow or fragile at run time. The semantics are those of the MIL op
reference (coremltools.converters.mil.mil.ops.defs), written here independently of coremltools' code.
Convolution and pooling are in exporters.coreml_numpy.conv.

Layouts follow MIL: x is (n, C, *D) with 1 to 3 spatial dims D; pads are [d0_begin, d0_end, d1_begin, ...].
"""
from __future__ import annotations

import math
import operator

import numpy as np

from exporters.coreml_numpy.conv import _v, avg_pool, conv, conv_transpose, l2_pool, max_pool


# ----------------------------------------------------------------------------------------------
# elementwise, reductions, indexing
# ----------------------------------------------------------------------------------------------
def _softmax(op):
    x, axis = _v(op, "x"), _v(op, "axis", -1)
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


def _cumsum(op):
    x, axis = _v(op, "x"), int(_v(op, "axis", 0))
    exclusive, reverse = bool(_v(op, "exclusive", False)), bool(_v(op, "reverse", False))
    if reverse:
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:
        y = y - x
    if reverse:
        y = np.flip(y, axis)
    return y


def _rsqrt(op):
    x, eps = _v(op, "x"), _v(op, "epsilon", 1e-12)
    return 1.0 / np.sqrt(x + eps)


def _reduce(fn):
    def impl(op):
        x = _v(op, "x")
        axes = _v(op, "axes")
        keep = bool(_v(op, "keep_dims", False))
        axes = tuple(range(x.ndim)) if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        return fn(x, axis=axes, keepdims=keep)

    return impl


def _gather(op):
    x, idx = _v(op, "x"), _v(op, "indices")
    axis = int(_v(op, "axis", 0))
    idx = np.asarray(idx).astype(np.int64)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take(x, idx, axis=axis)


def _sigmoid(op):
    x = _v(op, "x")
    return 1.0 / (1.0 + np.exp(-x))


def _silu(op):
    x = _v(op, "x")
    return x / (1.0 + np.exp(-x))


def _matmul(op):
    x, y = _v(op, "x"), _v(op, "y")
    if bool(_v(op, "transpose_x", False)):
        x = np.swapaxes(x, -1, -2)
    if bool(_v(op, "transpose_y", False)):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _linear(op):
    x, w, b = _v(op, "x"), _v(op, "weight"), _v(op, "bias")
    y = x @ np.swapaxes(w, -1, -2)
    return y if b is None else y + b


def _floor_mod(op):
    x, y = _v(op, "x"), _v(op, "y")
    return np.mod(x, y)  # floor semantics, same as MIL floor_mod and torch remainder


def _select(op):
    return np.where(_v(op, "cond"), _v(op, "a"), _v(op, "b"))


def _one_hot(op):
    idx = np.asarray(_v(op, "indices")).astype(np.int64)
    size, axis = int(_v(op, "one_hot_vector_size")), int(_v(op, "axis", -1))
    on, off = _v(op, "on_value", 1), _v(op, "off_value", 0)
    hot = idx[..., None] == np.arange(size)  # out-of-range indices: all off
    return np.moveaxis(np.where(hot, on, off), -1, axis % (idx.ndim + 1))


def _cast(op):
    from coremltools.converters.mil.mil import types

    x, dtype = _v(op, "x"), str(np.asarray(_v(op, "dtype")))
    nd = types.nptype_from_builtin(types.string_to_builtin(dtype))
    x = np.asarray(x)
    if np.issubdtype(nd, np.integer) and np.issubdtype(x.dtype, np.floating):
        x = np.trunc(x)  # MIL cast float -> int rounds toward zero
    return x.astype(nd)


# ----------------------------------------------------------------------------------------------
# normalization, resizing, layout
# ----------------------------------------------------------------------------------------------
def _channel(v, x):
    return None if v is None else np.asarray(v).reshape(1, -1, *[1] * (x.ndim - 2))


def _affine(y, op, x):
    gamma, beta = _channel(_v(op, "gamma"), x), _channel(_v(op, "beta"), x)
    y = y if gamma is None else y * gamma
    return y if beta is None else y + beta


def _batch_norm(op):
    x = _v(op, "x")
    eps = float(_v(op, "epsilon", 1e-5))
    y = (x - _channel(_v(op, "mean"), x)) / np.sqrt(_channel(_v(op, "variance"), x) + eps)
    return _affine(y, op, x)


def _instance_norm(op):
    x = _v(op, "x")
    eps = float(_v(op, "epsilon", 1e-5))
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return _affine((x - mean) / np.sqrt(var + eps), op, x)


def _layer_norm(op):
    x = _v(op, "x")
    eps = float(_v(op, "epsilon", 1e-5))
    axes = _v(op, "axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(int(a) % x.ndim for a in np.atleast_1d(axes))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]  # gamma, beta: x's shape on `axes`
    gamma, beta = _v(op, "gamma"), _v(op, "beta")
    y = y if gamma is None else y * np.asarray(gamma).reshape(shape)
    return y if beta is None else y + np.asarray(beta).reshape(shape)


def _upsample_nearest_neighbor(op):
    x = _v(op, "x")
    out = x
    for axis, name in ((-2, "scale_factor_height"), (-1, "scale_factor_width")):
        scale, size = float(_v(op, name, 1)), x.shape[axis]
        n = int(math.floor(size * scale))
        src = np.minimum(np.floor(np.arange(n) / scale).astype(np.int64), size - 1)
        out = np.take(out, src, axis=axis)
    return out


def _bilinear_axis(x, axis, n_out, align_corners, half_pixel):
    n_in = x.shape[axis]
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(i)
    elif half_pixel:
        src = (i + 0.5) * (n_in / n_out) - 0.5
    else:
        src = i * (n_in / n_out)
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo).astype(np.float32).reshape([-1 if a == axis % x.ndim else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _upsample_bilinear(op):
    x = _v(op, "x")
    align = bool(_v(op, "align_corners", True))
    half = bool(_v(op, "half_pixel_centers", not align))
    for axis, name in ((-2, "scale_factor_height"), (-1, "scale_factor_width")):
        n = int(math.floor(x.shape[axis] * float(_v(op, name, 1))))
        x = _bilinear_axis(x, axis, n, align, half)
    return x


def _pixel_shuffle(op):
    x, f = _v(op, "x"), int(_v(op, "upscale_factor"))
    n, c, h, w = x.shape
    y = x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (f * f), h * f, w * f)


def _pixel_unshuffle(op):
    x, f = _v(op, "x"), int(_v(op, "downscale_factor"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // f, f, w // f, f).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * f * f, h // f, w // f)


# ----------------------------------------------------------------------------------------------
# constexpr (compressed weight) ops: materialise the weight
# ----------------------------------------------------------------------------------------------
def _constexpr_affine_dequantize(op):
    q = _v(op, "quantized_data").astype(np.float32)
    zp = np.asarray(_v(op, "zero_point")).astype(np.float32)
    s = np.asarray(_v(op, "scale")).astype(np.float32)
    axis = int(_v(op, "axis"))
    per_axis = [-1 if i == axis else 1 for i in range(q.ndim)]  # scale / zero_point: scalar or 1-D on `axis`
    if zp.ndim == 1 and zp.size > 1:
        zp = zp.reshape(per_axis)
    if s.ndim == 1 and s.size > 1:
        s = s.reshape(per_axis)
    return (q - zp) * s


def _block_expand(a, shape):
    """Repeat a per-block parameter (same rank as the data) up to the data's shape."""
    a = np.asarray(a)
    for ax, (n, m) in enumerate(zip(shape, a.shape)):
        if n != m:
            a = np.repeat(a, n // m, axis=ax)
    return a


def _constexpr_blockwise_shift_scale(op):
    data = _v(op, "data").astype(np.float32)
    scale = _block_expand(_v(op, "scale"), data.shape).astype(np.float32)
    off = _v(op, "offset")
    if off is not None:
        data = data - _block_expand(off, data.shape).astype(np.float32)
    return data * scale


def _binary(fn):
    """An elementwise binary op with broadcasting (MIL's add, mul, greater...): fn(x, y), as its value_inference
    computes it without the per-call checks around it (the interpreter casts to the declared dtype)."""
    def impl(op):
        return fn(_v(op, "x"), _v(op, "y"))

    return impl


def _unary(fn):
    def impl(op):
        return fn(_v(op, "x"))

    return impl


def _clip(op):
    return np.minimum(np.maximum(_v(op, "x"), _v(op, "alpha")), _v(op, "beta"))


def _inverse(op):
    return np.reciprocal(_v(op, "x") + _v(op, "epsilon", 1e-4))


def _log(op):
    return np.log(_v(op, "x") + _v(op, "epsilon", 1e-45))


# the elementwise ops: the operators of their value_inference (coremltools' defs/iOS15/elementwise_*.py)
ELEMENTWISE = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "real_div": operator.truediv,
    "floor_div": operator.floordiv, "pow": operator.pow, "maximum": np.maximum, "minimum": np.minimum,
    "equal": np.equal, "not_equal": np.not_equal, "greater": np.greater, "greater_equal": np.greater_equal,
    "less": np.less, "less_equal": np.less_equal, "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}
UNARY = {"abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "logical_not": np.logical_not, "floor": np.floor,
         "ceil": np.ceil, "sign": np.sign, "tanh": np.tanh, "sin": np.sin, "cos": np.cos}

# ops whose output values are some of their inputs' values (moved, picked, or compared and picked): of the
# same dtype (MIL types them so), fp16 outputs of these hold fp16 values already, and the evaluator skips
# rounding them (in a step over large state tensors, rounding is most of the evaluation's time)
PICKING = frozenset({"select", "reshape", "transpose", "slice_by_index", "slice_by_size", "concat", "stack",
                     "expand_dims", "squeeze", "tile", "gather", "gather_nd", "gather_along_axis", "split",
                     "identity", "reverse", "reduce_max", "reduce_min", "maximum", "minimum", "clip", "relu",
                     "fill", "fill_like"})

CUSTOM = {
    # ops that either lack value_inference or whose value_inference is slow/fragile
    **{t: _binary(fn) for t, fn in ELEMENTWISE.items()},
    **{t: _unary(fn) for t, fn in UNARY.items()},
    "clip": _clip,
    "inverse": _inverse,
    "log": _log,
    "softmax": _softmax,
    "cumsum": _cumsum,
    "rsqrt": _rsqrt,
    "sigmoid": _sigmoid,
    "silu": _silu,
    "matmul": _matmul,
    "linear": _linear,
    "gather": _gather,
    "floor_mod": _floor_mod,
    "select": _select,
    "cast": _cast,
    "one_hot": _one_hot,
    "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min),
    "reduce_sum": _reduce(np.sum),
    "reduce_mean": _reduce(np.mean),
    "reduce_prod": _reduce(np.prod),
    "conv": conv,
    "conv_transpose": conv_transpose,
    "max_pool": max_pool,
    "avg_pool": avg_pool,
    "l2_pool": l2_pool,
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "layer_norm": _layer_norm,
    "upsample_nearest_neighbor": _upsample_nearest_neighbor,
    "upsample_bilinear": _upsample_bilinear,
    "pixel_shuffle": _pixel_shuffle,
    "pixel_unshuffle": _pixel_unshuffle,
    "constexpr_affine_dequantize": _constexpr_affine_dequantize,
    "constexpr_blockwise_shift_scale": _constexpr_blockwise_shift_scale,
}
