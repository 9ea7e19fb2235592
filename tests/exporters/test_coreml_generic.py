"""The CoreML target on modules that are not NEAT: conv nets, int64 and bool I/O, unbatched tensors, buffer
slicing, outputs that are inputs, unsupported ops; and the NumPy evaluator's ops against torch."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exporters.registry import TARGETS

pytestmark = pytest.mark.skipif(not TARGETS["coreml"].is_available()[0],
                                reason=f"coreml: {TARGETS['coreml'].is_available()[1]}")


@pytest.fixture(scope="module")
def models():
    from coreml_models import specs

    return specs()


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    """export(name, precision) -> (outcome, bundle dir), each model exported once per precision."""
    from exporters.build import export_bundle

    done = {}

    def get(name: str, precision: str = "fp32"):
        if (name, precision) not in done:
            out = tmp_path_factory.mktemp(name) / "bundle"
            done[name, precision] = export_bundle(models[name], ["coreml"], out, precision)[0], out
        return done[name, precision]

    return get


def _package(bundle, precision="fp32"):
    return str(bundle / f"coreml-{precision}" / "model.mlpackage")


MODELS = ["convnet", "conv1d", "tokens", "masked", "attention", "returns_input", "unbatched", "cond", "gru_cell"]


@pytest.mark.parametrize("name", MODELS)
def test_model_exports_and_passes_numerically(exported, name):
    outcome, _ = exported(name)
    assert outcome.verdict == "passed", outcome.message


@pytest.mark.parametrize("name", ["convnet", "tokens"])
def test_fp16_and_int8_still_pass(exported, name):
    for precision in ("fp16", "int8"):
        outcome, _ = exported(name, precision)
        assert outcome.verdict == "passed", f"{precision}: {outcome.message}"


def test_int64_and_bool_travel_as_int32_and_come_back_declared(exported):
    from exporters import coreml_numpy
    from runtimes.bundle import read_manifest
    from runtimes.coreml import BOUNDARY_KEY

    int32 = 131104  # ArrayFeatureType.INT32
    _, bundle = exported("tokens")
    spec, _ = coreml_numpy.read_spec(_package(bundle))
    assert [i.type.multiArrayType.dataType for i in spec.description.input] == [int32]
    assert json.loads(spec.description.metadata.userDefined[BOUNDARY_KEY]) == {"tokens": "int64", "best": "int64"}
    assert read_manifest(bundle).artifacts["coreml-fp32"].settings["boundary"] == "int64 carried as int32"
    logits, best = coreml_numpy.load(_package(bundle))(np.array([[1, 2, 3, 39, 0, 5, 7]], np.int64))
    assert best.dtype == np.int64 and (best == logits.argmax(-1)).all()

    _, bundle = exported("masked")
    spec, _ = coreml_numpy.read_spec(_package(bundle))
    assert spec.description.input[1].type.multiArrayType.dataType == int32
    keep = np.array([[True, False, True, False, False, False], [False] * 6])
    _, any_kept, dropped = coreml_numpy.load(_package(bundle))(np.ones((2, 6, 4), np.float32), keep)
    assert any_kept.dtype == np.bool_ and any_kept.tolist() == [True, False] and (dropped == ~keep).all()


def test_int64_beyond_int32_is_an_input_error(exported):
    from exporters import coreml_numpy
    from runtimes.errors import InputError

    _, bundle = exported("tokens")
    run = coreml_numpy.load(_package(bundle))
    with pytest.raises(InputError, match="'tokens'.*int32"):
        run(np.full((1, 7), 2**40, np.int64))


def test_unbatched_tensors_have_no_batch_dimension(exported):
    from exporters import coreml_numpy

    _, bundle = exported("unbatched")
    spec, _ = coreml_numpy.read_spec(_package(bundle))
    x, table = (i.type.multiArrayType for i in spec.description.input)
    assert [r.upperBound for r in x.shapeRange.sizeRanges] == [3, 4]  # batch 1..3
    assert list(table.shape) == [4, 3] and not table.shapeRange.sizeRanges
    y, colsum = coreml_numpy.load(_package(bundle))(np.ones((3, 4), np.float32), np.eye(4, 3, dtype=np.float32))
    assert y.shape == (3, 3) and colsum.shape == (3,)


def test_alias_and_identity_outputs_are_fixed_on_a_copy(models):
    from exporters.capture import Captured
    from exporters.coreml_graph import prepare

    cap = Captured(models["attention"])
    shared = cap.decomposed("none")
    assert "aten.alias" in str(shared.graph)
    prepared = prepare(shared)
    assert prepared is not shared and "aten.alias" not in str(prepared.graph)
    assert "aten.alias" in str(cap.decomposed("none").graph)  # the capture's program is untouched

    cap = Captured(models["returns_input"])
    prepared = prepare(cap.decomposed("none"))
    out = prepared.graph.output_node().args[0]
    assert out[1].op == "call_function" and out[1].args[0].op == "placeholder"
    x = torch.randn(2, 5)
    twice, same = prepared.module()(x)
    assert torch.equal(same, x) and torch.equal(twice, 2 * x)
    ok = Captured(models["convnet"]).decomposed("none")
    assert prepare(ok) is ok  # nothing to fix: no copy


def test_cond_is_inlined_and_lacking_ops_are_lowered(models):
    from exporters.capture import Captured
    from exporters.coreml_graph import lacking, lower_lacking, prepare

    shared = Captured(models["cond"]).decomposed("none")
    assert lacking(shared) == {"higher_order.cond": lacking(shared)["higher_order.cond"]}
    inlined = prepare(shared)
    assert not lacking(inlined) and "higher_order.cond" in str(shared.graph)
    for x in (torch.ones(1, 4), -torch.ones(1, 4)):  # both branches
        torch.testing.assert_close(inlined.module()(x)[0], models["cond"].module(x)[0])

    gru = Captured(models["gru_cell"]).decomposed("none")
    assert "aten.gru_cell.default" in lacking(gru)
    assert not lacking(lower_lacking(gru)) and "aten.gru_cell.default" in lacking(gru)  # the shared one intact


def test_identity_output_keeps_its_name(exported):
    from exporters import coreml_numpy

    _, bundle = exported("returns_input")
    spec, _ = coreml_numpy.read_spec(_package(bundle))
    assert [o.name for o in spec.description.output] == ["twice", "same"]


def test_unsupported_op_is_one_conversion_error_naming_op_and_fix(tmp_path):
    from coreml_models import Unsupported, f32, spec

    from exporters.build import export_bundle
    from exporters.capture import Captured
    from exporters.coreml import Settings, convert
    from exporters.errors import ConversionError

    bad = spec("bad", Unsupported(), [f32("x", 5)], [f32("y", 5)], batch=(1, 1))
    outcome = export_bundle(bad, ["coreml"], tmp_path / "b", "fp32")[0]
    assert outcome.verdict == "error"
    assert "aten.erfinv" in outcome.message and "torch.erfinv" in outcome.message  # the op and its source line
    assert "another target" in outcome.message and "Traceback" not in outcome.message
    with pytest.raises(ConversionError, match="no conversion for aten.erfinv"):
        convert(Captured(bad), "fp32", Settings())
    renamed = spec("renamed", Unsupported(), [f32("x", 5)], [f32("any", 5)], batch=(1, 1))
    with pytest.raises(ConversionError, match=r"reserves the names \['any'\]"):  # coremltools would rename it
        convert(Captured(renamed), "fp32", Settings())


def test_an_op_the_evaluator_cannot_compute_is_not_verified(tmp_path):
    from coreml_models import GridSample, f32, spec

    from exporters.build import export_bundle

    model = spec("grid", GridSample(), [f32("x", 2, 5, 5), f32("grid", 3, 3, 2)], [f32("y", 2, 3, 3)], batch=(1, 1))
    outcome = export_bundle(model, ["coreml"], tmp_path / "b", "fp32")[0]
    assert outcome.verdict == "not verified" and "resample" in outcome.message


# ----------------------------------------------------------------------------------------------
# the NumPy evaluator's ops, each on a one-op MIL program, against torch
# ----------------------------------------------------------------------------------------------
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
