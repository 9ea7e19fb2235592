"""Convolution and pooling in NumPy, for the CoreML evaluator's op table (exporters.coreml_numpy.ops); and
the two accessors every op implementation reads its bound inputs with.

Layouts follow MIL: x is (n, C, *D) with 1 to 3 spatial dims D; pads are [d0_begin, d0_end, d1_begin, ...].
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _v(op, name, default=None):
    """The value bound to input `name` of `op`, read straight from the op's input table and the Var's value
    holder: `op.inputs` builds a new dict and `Var.val` scans the value for symbols on every access, and
    this runs for every input of every op evaluated (the evaluator's values are concrete)."""
    x = op._input_vars.get(name)
    if x is None:
        return default
    held = x._sym_val
    return x.val if held is None else held.val


def _ints(op, name, default):
    v = _v(op, name)
    return [int(i) for i in np.atleast_1d(v)] if v is not None else list(default)


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


def conv(op):
    x, weight = _v(op, "x"), _v(op, "weight")
    nd = x.ndim - 2
    strides, dilations = _ints(op, "strides", [1] * nd), _ints(op, "dilations", [1] * nd)
    eff = [(k - 1) * d + 1 for k, d in zip(weight.shape[2:], dilations)]
    pads = _pads(str(_v(op, "pad_type", "valid")), _v(op, "pad"), x.shape[2:], eff, strides)
    return _conv_nd(x, weight, _v(op, "bias"), strides, pads, dilations, int(_v(op, "groups", 1)))


def conv_transpose(op):
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


def max_pool(op):
    x = _v(op, "x")
    kernel, strides, grown, _ = _pool_geometry(op, x)
    win = _windows(_pad_spatial(x, grown, -np.inf), kernel, strides, [1] * len(kernel))
    return win.max(axis=tuple(range(-len(kernel), 0)))


def _window_sum(x, kernel, strides, pads):
    win = _windows(_pad_spatial(x, pads), kernel, strides, [1] * len(kernel))
    return win.sum(axis=tuple(range(-len(kernel), 0)))


def avg_pool(op):
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


def l2_pool(op):
    x = _v(op, "x")
    kernel, strides, grown, _ = _pool_geometry(op, x)
    return np.sqrt(_window_sum(x * x, kernel, strides, grown))
