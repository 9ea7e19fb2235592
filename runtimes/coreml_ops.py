"""NumPy versions of MIL ops, for the off-device CoreML evaluator (runtimes.coreml_eval).

Each function takes a MIL Operation whose input Vars are bound to values (`var.val`) and returns the op's
output value(s). They cover ops that have no `value_inference` in coremltools (conv, pooling, norms...)
and ops whose `value_inference` is slow or fragile at run time. The semantics are those of the MIL op
reference (coremltools.converters.mil.mil.ops.defs), written here independently of coremltools' code.

Layouts follow MIL: x is (n, C, *D) with 1 to 3 spatial dims D; pads are [d0_begin, d0_end, d1_begin, ...].
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _v(op, name, default=None):
    x = op.inputs.get(name)
    return default if x is None else x.val


def _ints(op, name, default):
    v = _v(op, name)
    return [int(i) for i in np.atleast_1d(v)] if v is not None else list(default)


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
# convolution and pooling
# ----------------------------------------------------------------------------------------------
def _pads(pad_type: str, pad, sizes, eff_kernel, strides) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial dim. same: the output is ceil(size / stride), the odd extra pad
    goes at the end (as torch's padding="same"); same_lower puts it at the beginning."""
    nd = len(sizes)
    if pad_type == "valid":
        return [(0, 0)] * nd
    if pad_type == "custom":
        p = [int(i) for i in np.atleast_1d(pad)] if pad is not None else [0] * 2 * nd
        return [(p[2 * i], p[2 * i + 1]) for i in range(nd)]
    if pad_type not in ("same", "same_lower"):
        raise ValueError(f"unknown pad_type {pad_type!r}")
    out = []
    for d, k, s in zip(sizes, eff_kernel, strides):
        total = max((math.ceil(d / s) - 1) * s + k - d, 0)
        small, big = total // 2, total - total // 2
        out.append((small, big) if pad_type == "same" else (big, small))
    return out


def _pad_spatial(x, pads, value=0.0):
    width = [(0, 0), (0, 0)] + [(max(b, 0), max(e, 0)) for b, e in pads]
    x = np.pad(x, width, constant_values=value)
    crop = (slice(None), slice(None)) + tuple(slice(max(-b, 0), x.shape[2 + i] - max(-e, 0))
                                              for i, (b, e) in enumerate(pads))
    return x[crop]


def _windows(x, kernel, strides, dilations):
    """(n, C, *D) -> (n, C, *D_out, *kernel): every window the kernel visits, a strided view."""
    nd = len(kernel)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    w = sliding_window_view(x, eff, axis=tuple(range(2, 2 + nd)))
    return w[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
             + tuple(slice(None, None, d) for d in dilations)]


def _conv_nd(x, weight, bias, strides, pads, dilations, groups):
    nd = x.ndim - 2
    xp = _pad_spatial(x, pads)
    win = _windows(xp, weight.shape[2:], strides, dilations)      # (n, C, *Do, *K)
    n, c = x.shape[:2]
    co = weight.shape[0]
    win = win.reshape(n, groups, c // groups, *win.shape[2:])      # (n, g, C/g, *Do, *K)
    w = weight.reshape(groups, co // groups, *weight.shape[1:])    # (g, Co/g, C/g, *K)
    o, k = "xyz"[:nd], "ijk"[:nd]
    y = np.einsum(f"ngc{o}{k},gmc{k}->ngm{o}", win, w, optimize=True)
    y = y.reshape(n, co, *y.shape[3:])
    return y if bias is None else y + np.asarray(bias).reshape(1, co, *[1] * nd)


def _conv(op):
    x, weight = _v(op, "x"), _v(op, "weight")
    nd = x.ndim - 2
    strides, dilations = _ints(op, "strides", [1] * nd), _ints(op, "dilations", [1] * nd)
    eff = [(k - 1) * d + 1 for k, d in zip(weight.shape[2:], dilations)]
    pads = _pads(str(_v(op, "pad_type", "valid")), _v(op, "pad"), x.shape[2:], eff, strides)
    return _conv_nd(x, weight, _v(op, "bias"), strides, pads, dilations, int(_v(op, "groups", 1)))


def _conv_transpose(op):
    """The gradient of conv: the input spread out by the stride, then a conv with the flipped kernel."""
    x, weight, bias = _v(op, "x"), _v(op, "weight"), _v(op, "bias")
    nd, groups = x.ndim - 2, int(_v(op, "groups", 1))
    strides, dilations = _ints(op, "strides", [1] * nd), _ints(op, "dilations", [1] * nd)
    kernel = weight.shape[2:]
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    full = [(d - 1) * s + e for d, s, e in zip(x.shape[2:], strides, eff)]  # before any padding is cut
    pad_type = str(_v(op, "pad_type", "valid"))
    if pad_type == "custom":
        p = _ints(op, "pad", [0] * 2 * nd)
        cut = [(p[2 * i], p[2 * i + 1]) for i in range(nd)]
    elif pad_type in ("same", "same_lower"):
        totals = [f - d * s for f, d, s in zip(full, x.shape[2:], strides)]
        cut = [(t // 2, t - t // 2) if pad_type == "same" else (t - t // 2, t // 2) for t in totals]
    else:
        cut = [(0, 0)] * nd
    out_shape = _v(op, "output_shape")
    sizes = [f - b - e for f, (b, e) in zip(full, cut)]
    if out_shape is not None:  # output_padding: extra rows at the end
        cut = [(b, e - (int(o) - s)) for (b, e), o, s in zip(cut, list(out_shape)[2:], sizes)]
    spread = np.zeros((*x.shape[:2], *[(d - 1) * s + 1 for d, s in zip(x.shape[2:], strides)]), x.dtype)
    spread[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)] = x
    ci, cog = weight.shape[:2]
    w = weight.reshape(groups, ci // groups, cog, *kernel).swapaxes(1, 2).reshape(groups * cog, ci // groups, *kernel)
    w = np.flip(w, axis=tuple(range(2, 2 + nd)))
    pads = [(e - 1 - b, e - 1 - a) for e, (b, a) in zip(eff, cut)]
    return _conv_nd(spread, np.ascontiguousarray(w), bias, [1] * nd, pads, dilations, groups)


def _pool_geometry(op, x):
    """(kernel, strides, pads with the ceil-mode overhang added at the end, declared pads)."""
    kernel = _ints(op, "kernel_sizes", [])
    nd = len(kernel)
    strides = _ints(op, "strides", [1] * nd)
    pads = _pads(str(_v(op, "pad_type", "valid")), _v(op, "pad"), x.shape[2:], kernel, strides)
    ceil = bool(_v(op, "ceil_mode", False))
    grown = []
    for d, k, s, (b, e) in zip(x.shape[2:], kernel, strides, pads):
        span = d + b + e - k
        out = (-(-span // s) if ceil else span // s) + 1
        if ceil and (out - 1) * s >= d + b:  # the last window would start in the end padding
            out -= 1
        grown.append((b, max(e, (out - 1) * s + k - d - b)))
    return kernel, strides, grown, pads


def _max_pool(op):
    x = _v(op, "x")
    kernel, strides, grown, _ = _pool_geometry(op, x)
    win = _windows(_pad_spatial(x, grown, -np.inf), kernel, strides, [1] * len(kernel))
    return win.max(axis=tuple(range(-len(kernel), 0)))


def _window_sum(x, kernel, strides, pads):
    win = _windows(_pad_spatial(x, pads), kernel, strides, [1] * len(kernel))
    return win.sum(axis=tuple(range(-len(kernel), 0)))


def _avg_pool(op):
    """Mean over each window. The divisor counts the declared padding unless exclude_padding_from_average;
    it never counts the overhang that ceil_mode adds beyond the padding (as PyTorch)."""
    x = _v(op, "x")
    kernel, strides, grown, declared = _pool_geometry(op, x)
    total = _window_sum(x, kernel, strides, grown)
    ones = np.ones((1, 1, *x.shape[2:]), np.float32)
    if not bool(_v(op, "exclude_padding_from_average", False)):  # padding counts, the overhang does not
        ones = _pad_spatial(ones, declared, 1.0)
        grown = [(0, ge - de) for (_, ge), (_, de) in zip(grown, declared)]
    count = _window_sum(ones, kernel, strides, grown)
    return total / count


def _l2_pool(op):
    x = _v(op, "x")
    kernel, strides, grown, _ = _pool_geometry(op, x)
    return np.sqrt(_window_sum(x * x, kernel, strides, grown))


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


CUSTOM = {
    # ops that either lack value_inference or whose value_inference is slow/fragile
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
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "l2_pool": _l2_pool,
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
