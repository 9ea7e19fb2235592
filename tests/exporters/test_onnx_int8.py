"""The onnx target's int8 precision (ONNX Runtime's dynamic quantization) on a small model with decode
methods: every method quantized, verified against its reference with the int8 tolerance, and decoding by
steps through runtimes.load; and the graph ONNX Runtime optimized at export, hashed and loaded as it is."""
import pytest

from exporters.registry import TARGETS

pytestmark = pytest.mark.skipif(not TARGETS["onnx"].is_available()[0],
                                reason=f"onnx: {TARGETS['onnx'].is_available()[1]}")


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    from test_methods import _export

    return _export(tmp_path_factory.mktemp("int8"), targets=("onnx",), precision="int8")


def test_every_method_is_quantized_and_verified_with_the_int8_tolerance(int8_bundle):
    import numpy as np
    import onnx

    from exporters.verify import TOLERANCES
    from runtimes.bundle import read_manifest

    assert int8_bundle.ok, str(int8_bundle)
    art = read_manifest(int8_bundle.bundle).artifacts["onnx-int8"]
    assert art.precision == "int8" and art.parity.verdict == "passed"
    assert art.parity.tolerance == TOLERANCES["int8"].to_dict()
    assert {m: p.verdict for m, p in art.methods.items()} == {"enter": "passed", "step": "passed"}
    assert art.decode.verdict == "passed"
    for part in ("", "step/"):  # the chunk forward and the step method carry the Linear layers
        graph = onnx.load(str(int8_bundle.bundle / "onnx-int8" / part / "model.onnx")).graph
        ops = {n.op_type for n in graph.node}
        assert "DynamicQuantizeLinear" in ops and ops & {"MatMulInteger", "ConvInteger"}, (part, ops)
        sizes = {i.name: int(np.prod(i.dims)) for i in graph.initializer}
        weight_zero_points = [n.input[3] for n in graph.node if n.op_type == "MatMulInteger" and len(n.input) > 3]
        assert weight_zero_points and all(sizes.get(z, 1) > 1 for z in weight_zero_points)  # one per output channel


def test_the_int8_artifact_decodes_by_steps_through_runtimes_load(int8_bundle):
    from runtimes import load

    session = load(int8_bundle.bundle, backend="onnx-int8")
    assert session.decoding == "step"
    prompt = bytes(range(10)) * 2
    stepped = session.generate(prompt, 12, decode="step")
    assert len(stepped) == 12 and stepped == session.generate(prompt, 12, decode="recompute")


def test_the_graph_optimized_at_export_is_hashed_and_loaded_without_optimizing_again(int8_bundle):
    import onnxruntime as ort

    from runtimes import load
    from runtimes.backends.onnx import FILE, OPTIMIZED
    from runtimes.bundle import read_manifest

    art = read_manifest(int8_bundle.bundle).artifacts["onnx-int8"]
    assert art.requirements["ort_optimized"] == ort.__version__
    listed = {f.path for f in art.files}
    assert {f"onnx-int8/{m}{f}" for m in ("", "enter/", "step/") for f in (FILE, OPTIMIZED)} <= listed
    session = load(int8_bundle.bundle, backend="onnx-int8")
    assert session._run.file == OPTIMIZED
    options = session._run.session.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # made by another ONNX Runtime version: the plain graph, optimized as it loads
    from runtimes.backends import onnx as backend
    from runtimes.profile import detect

    run = backend.load(int8_bundle.bundle / "onnx-int8", {**art.requirements, "ort_optimized": "0.0"}, detect())
    assert run.file == FILE
    assert run.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
