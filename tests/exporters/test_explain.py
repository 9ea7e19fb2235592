"""exporters.explain: a fault planted in one op of a 20-layer model is named first, with its module and source
line; a faithful artifact shows no divergence; targets without intermediate values say so."""
import inspect

import numpy as np
import pytest
import torch
from torch import nn

import exporters
from exporters.registry import TARGETS

PLANTED = 13  # the layer whose tanh the planted fault scales by 1.001


class Block(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.fc, self.norm = nn.Linear(dim, dim), nn.LayerNorm(dim)

    def forward(self, x):                                # (B, C)
        return x + torch.tanh(self.norm(self.fc(x)))


class Deep(nn.Module):
    def __init__(self, layers=20, dim=8):
        super().__init__()
        self.layers = nn.ModuleList(Block(dim) for _ in range(layers))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


LINE = f"test_explain.py:{inspect.getsourcelines(Block.forward)[1] + 1}"


@pytest.fixture(scope="module")
def deep():
    from exporters.capture import Captured

    torch.manual_seed(0)
    model, x = Deep().eval(), torch.randn(2, 8)
    return model, x, Captured(exporters.describe(model, (x,)))


def _planted_onnx(path, value: str, out):
    """The ONNX model at `path` with the value `value` multiplied by 1.001 where it is made."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    at = next(i for i, n in enumerate(graph.node) if value in n.output)
    graph.node[at].output[list(graph.node[at].output).index(value)] = value + "_raw"
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.001, np.float32), "planted_scale"))
    graph.node.insert(at + 1, onnx.helper.make_node("Mul", [value + "_raw", "planted_scale"], [value]))
    onnx.save(model, str(out))
    return out


@pytest.mark.skipif(not TARGETS["onnx"].is_available()[0], reason=f"onnx: {TARGETS['onnx'].is_available()[1]}")
def test_onnx_planted_fault_is_named_first_with_its_module_and_line(deep, tmp_path):
    from exporters.explain import explain_captured

    _, _, cap = deep
    TARGETS["onnx"].export(cap, tmp_path, TARGETS["onnx"].Settings())
    clean = explain_captured(cap, tmp_path / "model.onnx")
    assert clean.compared >= 80 and not clean.divergences, str(clean)

    planted = _planted_onnx(tmp_path / "model.onnx", f"tanh_{PLANTED}", tmp_path / "planted.onnx")
    report = explain_captured(cap, planted)
    first = report.divergences[0]
    assert (first.op, first.module) == ("aten.tanh.default", f"layers.{PLANTED}"), str(report)
    assert first.source.startswith(LINE) and first.before < 1e-4 < first.after, str(report)
    assert f"in layers.{PLANTED} at {LINE}" in str(report)


def test_targets_without_intermediate_values_say_so(deep):
    from exporters.explain import ExplainError, explain_captured

    _, _, cap = deep
    assert "no intermediate value" in explain_captured(cap, "cpu").note
    assert "exact" in explain_captured(cap, "exported").note
    with pytest.raises(ExplainError, match="unknown target"):
        explain_captured(cap, "not-a-target.txt")


def _planted_mlpackage(package, value: str, out):
    """The saved ML program at `package` with the var `value` multiplied by 1.001 where it is made, saved
    again without coremltools' graph passes (which would fold the planted op away)."""
    import contextlib
    import io

    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    from exporters import coreml_numpy

    prog = coreml_numpy.load_mlpackage(str(package))
    fn = prog.functions["main"]
    ops = list(fn.operations)
    at = next(i for i, op in enumerate(ops) if op.outputs[0].name == value)
    made = ops[at].outputs[0]
    with fn:
        scaled = mb.mul(x=made, y=np.float32(1.001), before_op=ops[at + 1])
        fn.replace_uses_of_var_after_op(anchor_op=scaled.op, old_var=made, new_var=scaled)
    made.name, scaled.name = value + "_raw", value
    with contextlib.redirect_stderr(io.StringIO()):
        ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                   minimum_deployment_target=ct.target.iOS17, pass_pipeline=ct.PassPipeline.EMPTY).save(str(out))
    return out


@pytest.mark.skipif(not TARGETS["coreml"].is_available()[0],
                    reason=f"coreml: {TARGETS['coreml'].is_available()[1]}")
def test_coreml_planted_fault_is_named_first_with_its_module_and_line(deep, tmp_path):
    from exporters.explain import explain_captured

    _, _, cap = deep
    TARGETS["coreml"].export(cap, tmp_path, TARGETS["coreml"].Settings())
    clean = explain_captured(cap, tmp_path / "model.mlpackage")
    assert clean.compared >= 80 and not clean.divergences, str(clean)

    planted = _planted_mlpackage(tmp_path / "model.mlpackage", f"tanh_{PLANTED}", tmp_path / "planted.mlpackage")
    first = explain_captured(cap, planted).divergences[0]
    assert (first.op, first.module) == ("aten.tanh.default", f"layers.{PLANTED}")
    assert first.source.startswith(LINE) and first.before < 1e-4 < first.after


@pytest.mark.skipif(not TARGETS["coreml"].is_available()[0],
                    reason=f"coreml: {TARGETS['coreml'].is_available()[1]}")
def test_a_failed_export_says_where_bool_mask_attention_departs(tmp_path, monkeypatch):
    """Issue 31's case with the rewrite of coreml_graph undone (coremltools reads nn.MultiheadAttention's
    bool mask inverted): the failure message names the attention op and its module."""
    from coreml_models import specs

    import exporters.coreml_graph
    from exporters.build import export_bundle

    monkeypatch.setattr(exporters.coreml_graph, "_like_dtype", lambda graph: False)
    outcome = export_bundle(specs()["bool_mask_mha"], ["coreml"], tmp_path / "b", "fp32")[0]
    assert outcome.verdict == "failed"
    assert "1. aten.scaled_dot_product_attention.default (%scaled_dot_product_attention) in attn" in outcome.message


def test_explain_bundle_explains_each_artifact_of_a_bundle(toy_bundle, toy):
    """What `neat verify --explain` prints: every artifact of a verified bundle, none out of tolerance."""
    from exporters.explain import ExplainError, explain_bundle
    from runtimes.bundle import read_manifest

    bundle, _ = toy_bundle
    reports = explain_bundle(bundle, toy)
    assert set(reports) == set(read_manifest(bundle).artifacts) and "onnx-fp32" in reports
    for key, report in reports.items():
        assert not report.divergences, f"{key}: {report}"
        if key.split("-")[0] in ("onnx", "coreml"):
            assert report.compared > 0, f"{key}: {report}"
    with pytest.raises(ExplainError, match="no artifact 'nope-fp32'"):
        explain_bundle(bundle, toy, ("nope-fp32",))
