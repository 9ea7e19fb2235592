"""The CoreML off-device NumPy evaluator (exporters.coreml_numpy), op by op: each op on a one-op MIL program,
against torch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exporters.registry import TARGETS

pytestmark = pytest.mark.skipif(not TARGETS["coreml"].is_available()[0],
                                reason=f"coreml: {TARGETS['coreml'].is_available()[1]}")


def _evaluate(build, x: np.ndarray):
    """Build a one-input MIL program with `build(x_var)` and evaluate it on `x`."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    from exporters.coreml_numpy import evaluate, unsupported_ops

    dtype = types.int32 if x.dtype.kind == "i" else types.fp32

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape, dtype=dtype)], opset_version=ct.target.iOS17)
    def prog(v):
        return build(v)

    assert not unsupported_ops(prog)
    (out,) = evaluate(prog, {"v": x}).values()
    return out


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _close(got, want):
    want = want.detach().numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


CONVS = [  # (x shape, weight shape, strides, dilations, groups, pad_type, pad)
    ((2, 4, 9, 8), (6, 2, 3, 2), (2, 1), (1, 2), 2, "custom", (1, 0, 2, 1)),
    ((1, 3, 7, 7), (5, 3, 3, 3), (1, 1), (1, 1), 1, "valid", None),
    ((2, 2, 8, 9), (4, 2, 4, 3), (1, 1), (1, 2), 1, "same", None),
    ((2, 4, 11), (8, 1, 3), (2,), (3,), 4, "custom", (2, 1)),
    ((1, 3, 10), (3, 3, 4), (1,), (1,), 1, "same", None),
]


@pytest.mark.parametrize("xs, ws, strides, dilations, groups, pad_type, pad", CONVS)
def test_conv(xs, ws, strides, dilations, groups, pad_type, pad):
    from coremltools.converters.mil import Builder as mb

    x, w, b = _rand(*xs), _rand(*ws, seed=1), _rand(ws[0], seed=2)
    kw = {"pad": list(pad)} if pad else {}
    got = _evaluate(lambda v: mb.conv(x=v, weight=w, bias=b, strides=list(strides), dilations=list(dilations),
                                      groups=groups, pad_type=pad_type, **kw), x)
    conv = F.conv1d if len(xs) == 3 else F.conv2d
    tx = torch.from_numpy(x)
    if pad_type == "custom":  # MIL: (begin, end) per dim from the first; F.pad: from the last dim back
        tx = F.pad(tx, [p for i in reversed(range(len(pad) // 2)) for p in pad[2 * i:2 * i + 2]])
    padding = "same" if pad_type == "same" else 0
    _close(got, conv(tx, torch.from_numpy(w), torch.from_numpy(b), stride=strides, padding=padding,
                     dilation=dilations, groups=groups))


def test_conv_transpose():
    from coremltools.converters.mil import Builder as mb

    x, w, b = _rand(2, 4, 5, 6), _rand(4, 3, 3, 2, seed=1), _rand(6, seed=2)
    want = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=(2, 3),
                              padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(1, 2))
    got = _evaluate(lambda v: mb.conv_transpose(x=v, weight=w, bias=b, strides=[2, 3], dilations=[1, 2], groups=2,
                                                pad_type="custom", pad=[1, 1, 0, 0], output_shape=list(want.shape)), x)
    _close(got, want)


POOLS = [  # (x shape, kernel, strides, pad per dim (symmetric), ceil_mode, exclude padding)
    ((2, 3, 9, 10), (3, 2), (2, 2), (1, 0), True, False),
    ((2, 3, 9, 10), (3, 3), (2, 3), (1, 1), True, True),
    ((1, 2, 8, 8), (2, 2), (2, 2), (0, 0), False, False),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), False, False),
    ((2, 3, 11), (3,), (2,), (1,), True, False),
    ((1, 2, 5, 5), (2, 2), (3, 3), (1, 1), True, False),  # ceil mode: the last window would start in padding
]


@pytest.mark.parametrize("xs, kernel, strides, pad, ceil, exclude", POOLS)
def test_pools(xs, kernel, strides, pad, ceil, exclude):
    from coremltools.converters.mil import Builder as mb

    x = _rand(*xs)
    common = dict(kernel_sizes=list(kernel), strides=list(strides), pad_type="custom",
                  pad=[p for p in pad for _ in (0, 1)], ceil_mode=ceil)
    tx = torch.from_numpy(x)
    two_d = len(xs) == 4
    max_pool, avg_pool = (F.max_pool2d, F.avg_pool2d) if two_d else (F.max_pool1d, F.avg_pool1d)
    _close(_evaluate(lambda v: mb.max_pool(x=v, **common), x),
           max_pool(tx, kernel, strides, pad, ceil_mode=ceil))
    _close(_evaluate(lambda v: mb.avg_pool(x=v, exclude_padding_from_average=exclude, **common), x),
           avg_pool(tx, kernel, strides, pad, ceil_mode=ceil, count_include_pad=not exclude))


def test_l2_pool():
    from coremltools.converters.mil import Builder as mb

    x = _rand(1, 2, 6, 6)
    got = _evaluate(lambda v: mb.l2_pool(x=v, kernel_sizes=[2, 3], strides=[2, 3], pad_type="valid"), x)
    _close(got, F.lp_pool2d(torch.from_numpy(x), 2, (2, 3), (2, 3)))


def test_norms():
    from coremltools.converters.mil import Builder as mb

    x = _rand(2, 3, 4, 5)
    mean, var = _rand(3, seed=1), np.abs(_rand(3, seed=2)) + 0.5
    gamma, beta = _rand(3, seed=3), _rand(3, seed=4)
    tx = torch.from_numpy(x)
    t = torch.from_numpy
    _close(_evaluate(lambda v: mb.batch_norm(x=v, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3), x),
           F.batch_norm(tx, t(mean), t(var), t(gamma), t(beta), training=False, eps=1e-3))
    _close(_evaluate(lambda v: mb.instance_norm(x=v, gamma=gamma, beta=beta, epsilon=1e-5), x),
           F.instance_norm(tx, weight=t(gamma), bias=t(beta), eps=1e-5))
    g2, b2 = _rand(4, 5, seed=5), _rand(4, 5, seed=6)
    _close(_evaluate(lambda v: mb.layer_norm(x=v, axes=[-2, -1], gamma=g2, beta=b2, epsilon=1e-5), x),
           F.layer_norm(tx, (4, 5), t(g2), t(b2), eps=1e-5))
    g1, b1 = _rand(3, seed=7), _rand(3, seed=8)  # a leading axis: gamma and beta along dim 1
    want = F.layer_norm(tx.movedim(1, -1), (3,), t(g1), t(b1), eps=1e-5).movedim(-1, 1)
    _close(_evaluate(lambda v: mb.layer_norm(x=v, axes=[1], gamma=g1, beta=b1, epsilon=1e-5), x), want)


@pytest.mark.parametrize("align", [True, False])
def test_resizing_and_pixel_shuffle(align):
    from coremltools.converters.mil import Builder as mb

    x = _rand(2, 8, 3, 4)
    tx = torch.from_numpy(x)
    _close(_evaluate(lambda v: mb.upsample_bilinear(x=v, scale_factor_height=2, scale_factor_width=3,
                                                    align_corners=align, half_pixel_centers=not align), x),
           F.interpolate(tx, scale_factor=(2, 3), mode="bilinear", align_corners=align))
    _close(_evaluate(lambda v: mb.upsample_nearest_neighbor(x=v, scale_factor_height=2, scale_factor_width=3), x),
           F.interpolate(tx, scale_factor=(2, 3), mode="nearest"))
    _close(_evaluate(lambda v: mb.pixel_shuffle(x=v, upscale_factor=2), x), F.pixel_shuffle(tx, 2))
    _close(_evaluate(lambda v: mb.pixel_unshuffle(x=v, downscale_factor=np.uint32(2)), _rand(1, 2, 4, 6)),
           F.pixel_unshuffle(torch.from_numpy(_rand(1, 2, 4, 6)), 2))


def test_one_hot():
    from coremltools.converters.mil import Builder as mb

    idx = np.array([[0, 3, 6], [2, 9, 1]], np.int32)  # 9: out of range, all off
    got = _evaluate(lambda v: mb.one_hot(indices=v, one_hot_vector_size=7, axis=1, on_value=2.0, off_value=-1.0), idx)
    want = np.where(idx[:, None, :] == np.arange(7)[None, :, None], 2.0, -1.0)
    np.testing.assert_array_equal(got, want)


def _both(build, x: np.ndarray):
    """The program `build(x_var)` evaluated with the NumPy versions (ops.CUSTOM) and with the ops' own
    value_inference: (custom result, builtin result, the custom versions that ran)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    from exporters.coreml_numpy import evaluate
    from exporters.coreml_numpy.interpreter import Stats

    dtype = types.int32 if x.dtype.kind == "i" else types.fp32

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape, dtype=dtype)], opset_version=ct.target.iOS17)
    def prog(v):
        return build(v)

    stats = Stats()
    (custom,) = evaluate(prog, {"v": x}, stats=stats).values()
    (builtin,) = evaluate(prog, {"v": x}, prefer_builtin=True).values()
    return custom, builtin, stats.custom


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_elementwise_ops_match_their_value_inference(dtype):
    """The evaluator's own elementwise ops (CUSTOM, for speed) compute what coremltools' value_inference does,
    broadcasting, int32 and the ops' epsilon included."""
    from coremltools.converters.mil import Builder as mb

    from exporters.coreml_numpy.ops import ELEMENTWISE

    x = (np.random.default_rng(1).standard_normal((3, 4)) * 4).astype(dtype) + (dtype == np.int32)
    y = (np.floor(np.abs(x[:1])) % 3 + 1).astype(dtype)  # (1, 4): broadcast, small whole, nonzero
    for name in ELEMENTWISE:
        if name.startswith("logical_"):
            def build(v):
                return getattr(mb, name)(x=mb.greater(x=v, y=dtype(0)), y=mb.less(x=v, y=dtype(2)))
        else:
            def build(v):
                return getattr(mb, name)(x=v, y=y)
        custom, builtin, ran = _both(build, x)
        assert name in ran and custom.dtype == builtin.dtype, name
        np.testing.assert_allclose(custom, builtin, rtol=1e-6, err_msg=name)
    if dtype == np.float32:
        pos = np.abs(x) + 0.5
        for build in (lambda v: mb.clip(x=v, alpha=-1.0, beta=2.0), lambda v: mb.inverse(x=v),
                      lambda v: mb.log(x=mb.abs(x=v)), lambda v: mb.sqrt(x=mb.abs(x=v)), lambda v: mb.exp(x=v),
                      lambda v: mb.logical_not(x=mb.greater(x=v, y=0.0))):
            custom, builtin, _ = _both(build, pos)
            np.testing.assert_allclose(custom, builtin, rtol=1e-6)


def test_fp16_ops_that_only_pick_values_are_exact_without_rounding():
    """ops.PICKING outputs are not rounded again: their fp16 inputs hold fp16 values, so the results are those
    of fp16 arithmetic all the same."""
    from coremltools.converters.mil import Builder as mb

    from exporters.coreml_numpy.ops import PICKING

    x = _rand(3, 4)
    h = x.astype(np.float16)

    def build(v):
        a = mb.cast(x=v, dtype="fp16")
        b = mb.mul(x=a, y=np.float16(3.0))
        picked = mb.select(cond=mb.greater(x=a, y=np.float16(0)), a=a, b=b)
        both = mb.concat(values=[picked, mb.reduce_max(x=b, axes=[1], keep_dims=True)], axis=1)
        return mb.cast(x=mb.add(x=both, y=np.float16(0.1)), dtype="fp32")

    assert {"select", "concat", "reduce_max"} <= PICKING
    b = (h * np.float16(3.0)).astype(np.float16)
    want = (np.concatenate([np.where(h > 0, h, b), b.max(1, keepdims=True)], 1) + np.float16(0.1)).astype(np.float16)
    np.testing.assert_array_equal(_evaluate(build, x), want.astype(np.float32))
