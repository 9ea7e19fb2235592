"""The ONNX target on what the dynamo exporter cannot take as captured: clamp bounds that mix a float and an
int (made floats on a copy of the program), and an output named like an input (refused, naming the fix)."""
import pytest
import torch

from exporters.registry import TARGETS

pytestmark = pytest.mark.skipif(not TARGETS["onnx"].is_available()[0],
                                reason=f"onnx: {TARGETS['onnx'].is_available()[1]}")


def test_mixed_clamp_bounds_export_and_pass(tmp_path):
    from coreml_models import specs

    from exporters.build import export_bundle
    from exporters.capture import Captured
    from exporters.onnx import float_clamp_bounds

    spec = specs()["bool_logic"]
    cap = Captured(spec)
    fixed = float_clamp_bounds(cap.program)
    assert fixed is not cap.program and float_clamp_bounds(fixed) is fixed  # a copy, once
    clamps = [n.args for n in cap.program.graph.nodes if n.target is torch.ops.aten.clamp.default]
    assert [type(a) for a in clamps[0][1:]] == [float, int]  # the shared capture is untouched
    outcome = export_bundle(spec, ["onnx"], tmp_path / "b", "fp32")[0]
    assert outcome.verdict == "passed", outcome.message


def test_an_output_named_like_an_input_is_refused(tmp_path):
    from coreml_models import ReturnsInput, f32, spec

    from exporters.capture import Captured
    from exporters.errors import ConversionError
    from exporters.onnx import Settings, export

    same = spec("same", ReturnsInput(), [f32("x", 5)], [f32("twice", 5), f32("x", 5)])
    with pytest.raises(ConversionError, match=r"\['x'\] name both an input and an output"):
        export(Captured(same), tmp_path, Settings())


class Mapped(torch.nn.Module):
    """torch's control-flow map over the first dimension: captured as higher_order.map_impl, which the ONNX
    exporter has no translation for."""

    def forward(self, xs, y):
        from functorch.experimental.control_flow import map as control_map

        return control_map(lambda x, y: x + y, xs, y)  # the line the error must point at


def test_a_conversion_failure_names_the_op_and_its_source_line(tmp_path):
    import exporters

    with pytest.raises(exporters.ExportFailed) as info:
        exporters.export(Mapped(), (torch.randn(3, 2), torch.randn(2)), unbatched=["y"], targets=["onnx"],
                         out=tmp_path / "b")
    message = str(info.value)
    assert "higher_order.map_impl" in message and "test_onnx.py:" in message and "control_map(" in message
    assert "Next steps" not in message
