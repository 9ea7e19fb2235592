"""The CoreML target on modules that are not NEAT: conv nets, int64 and bool I/O, unbatched tensors, buffer
slicing, outputs that are inputs, unsupported ops (the NumPy evaluator's ops: test_coreml_numpy_ops.py)."""
import json

import numpy as np
import pytest
import torch

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


MODELS = ["convnet", "conv1d", "tokens", "masked", "bool_logic", "attention", "returns_input", "unbatched", "cond",
          "gru_cell", "bool_mask_mha"]


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
    from runtimes.backends.coreml import BOUNDARY_KEY

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


def test_bool_bitwise_or_and_xor_become_logical_ops_on_a_copy(models):
    from exporters.capture import Captured
    from exporters.coreml_graph import lacking, prepare

    shared = Captured(models["bool_logic"]).decomposed("none")
    assert {"aten.__or__.Tensor", "aten.__xor__.Tensor"} <= set(lacking(shared))
    prepared = prepare(shared)
    assert not lacking(prepared) and "aten.__or__" in str(shared.graph)  # the shared program intact
    x, keep = torch.randn(3, 6), torch.rand(3, 6) > 0.5
    for got, want in zip(prepared.module()(x, keep), models["bool_logic"].module(x, keep)):
        assert torch.equal(got, want)


def test_like_ops_get_their_dtype_as_a_cast_on_a_copy(models):
    """coremltools ignores zeros_like's dtype= (nn.MultiheadAttention's bool mask -> float): made a cast."""
    from exporters.capture import Captured
    from exporters.coreml_graph import prepare

    shared = Captured(models["bool_mask_mha"]).decomposed("none")
    likes = [n for n in prepare(shared).graph.nodes if n.target == torch.ops.aten.zeros_like.default]
    assert likes and all("dtype" not in n.kwargs and n.args[0].meta["val"].dtype == torch.float32 for n in likes)
    assert any("dtype" in n.kwargs for n in shared.graph.nodes if n.target == torch.ops.aten.zeros_like.default)


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
        convert(Captured(bad), Settings())
    renamed = spec("renamed", Unsupported(), [f32("x", 5)], [f32("any", 5)], batch=(1, 1))
    with pytest.raises(ConversionError, match=r"reserves the names \['any'\]"):  # coremltools would rename it
        convert(Captured(renamed), Settings())


def test_an_op_the_evaluator_cannot_compute_is_not_verified(tmp_path):
    from coreml_models import GridSample, f32, spec

    from exporters.build import export_bundle

    model = spec("grid", GridSample(), [f32("x", 2, 5, 5), f32("grid", 3, 3, 2)], [f32("y", 2, 3, 3)], batch=(1, 1))
    outcome = export_bundle(model, ["coreml"], tmp_path / "b", "fp32")[0]
    assert outcome.verdict == "not verified" and "resample" in outcome.message


class ScaledBy(torch.nn.Module):
    """A 0-d input (a scale) beside a batched one, and a 0-d output."""

    def forward(self, x, scale):
        return x * scale, scale * 2


def test_a_0d_input_reaches_coreml_as_shape_1_and_back(tmp_path):
    import exporters

    x, scale = torch.randn(2, 3), torch.tensor(1.5)
    result = exporters.export(ScaledBy(), (x, scale), batch=(1, 3), targets=["coreml"], out=tmp_path / "b")
    assert result.ok, str(result)
    assert [t.shape for t in result.spec.inputs] == [(3,), ()]  # the signature keeps the user's 0-d input
    from exporters.coreml import runner

    run = runner(tmp_path / "b" / "coreml-fp32", {}).run  # MLModel.predict on macOS, else the NumPy evaluator
    y, twice = run(x.numpy(), scale.numpy())
    np.testing.assert_allclose(y, (x * scale).numpy(), rtol=1e-3)
    assert np.asarray(twice).reshape(()) == 3.0


def test_a_coremltools_error_about_an_input_names_the_inputs():
    import coremltools as ct

    from exporters.coreml import _inputs_named

    inputs = [ct.TensorType(name="x", shape=(ct.RangeDim(1, 3), 3)), ct.TensorType(name="scale", shape=(1,))]
    assert _inputs_named("Rank-0 (input None) is unsupported", inputs) == " (inputs: x (1..3, 3), scale (1,))"
    assert _inputs_named("unsupported op", inputs) == ""
