"""The openvino target and backend on small modules: fp32 through the toy bundle, fp16 on its own, what a call
compiles (one static model per shape set, the thread count given), typed errors, and `all` leaving it out."""
import numpy as np
import pytest

from exporters import openvino as target
from runtimes.errors import InputError
from toy import assert_carries_state_like

pytestmark = pytest.mark.skipif(not target.is_available()[0], reason=target.is_available()[1])


def _load(bundle, key="openvino-fp32", threads=1):
    from runtimes import backends
    from runtimes.bundle import read_manifest
    from runtimes.profile import detect

    art = read_manifest(bundle).artifacts[key]
    return backends.get("openvino").load(bundle / key, art.requirements, detect(), threads=threads), art


def test_toy_runs_through_runtimes_load_with_its_state(toy_bundle):
    session, tokens, state = assert_carries_state_like(toy_bundle[0], "openvino", "onnx")
    with pytest.raises(InputError):  # validated against the manifest before the backend sees it
        session.run(tokens.astype(np.float32), state)


def test_each_shape_set_is_compiled_once_statically_with_the_threads_given(toy_bundle):
    run, _ = _load(toy_bundle[0], threads=1)
    assert run.config["INFERENCE_NUM_THREADS"] == 1 and run.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert run.config["PERFORMANCE_HINT"] == "LATENCY"
    h = np.zeros((1, 16), np.float32)
    for batch in (1, 2, 1, 2):
        run(np.zeros((batch, 8), np.int32), np.zeros((batch, 16), np.float32))
    frozen = np.zeros((1, 8), np.int32)
    frozen.setflags(write=False)  # OpenVINO cannot share read-only memory: copied
    run(frozen, h)
    assert sorted(run.compiled, key=str) == [((1, 8), (1, 16)), ((2, 8), (2, 16))]
    for cm, _ in run.compiled.values():
        assert cm.inputs[0].get_partial_shape().is_static
        assert int(cm.get_property("INFERENCE_NUM_THREADS")) == 1
    with pytest.raises(InputError, match="expects 2 inputs"):
        run(np.zeros((1, 8), np.int32))
    with pytest.raises(InputError, match="'tokens' is int64, the model takes int32"):
        run(np.zeros((1, 8), np.int64), h)
    with pytest.raises(InputError, match="'h' has shape \\[1, 7\\]"):
        run(np.zeros((1, 8), np.int32), h[:, :7])


def test_fp16_stores_half_weights_and_computes_close_to_fp32(toy_bundle, tmp_path):
    bundle = toy_bundle[0]
    requirements = target.convert(bundle / "onnx-fp32" / "model.onnx", tmp_path, target.Settings(precision="fp16"))
    assert requirements["precision"] == "fp16"
    assert 'element_type="f16"' in (tmp_path / "model.xml").read_text()
    assert (tmp_path / "model.bin").stat().st_size < 0.6 * (bundle / "openvino-fp32" / "model.bin").stat().st_size
    from runtimes import backends
    from runtimes.profile import detect

    half = backends.get("openvino").load(tmp_path, requirements, detect(), threads=1)
    full, _ = _load(bundle)
    args = np.arange(16, dtype=np.int32).reshape(2, 8) % 50, np.full((2, 16), 0.1, np.float32)
    for a, b in zip(half(*args), full(*args)):
        np.testing.assert_allclose(a, b, atol=2e-2)


def test_all_leaves_it_out_saying_so_and_naming_it_builds_it(toy, tmp_path):
    import contextlib

    from exporters.build import export_bundle, resolve_targets

    assert resolve_targets(["openvino"], "fp32") == ["openvino"]
    said = []

    @contextlib.contextmanager
    def step(label):
        said.append(label)
        if label.startswith("capture"):
            raise KeyboardInterrupt  # stop before anything is built
        yield

    with pytest.raises(KeyboardInterrupt):
        export_bundle(toy, ["all"], tmp_path / "b", "fp32", {"compute_capabilities": ("8.6",)}, step=step)
    assert any("openvino: left out of `all`" in s and "neat export openvino" in s for s in said), said
    assert not any(s.startswith("openvino-fp32") for s in said)


def test_a_bad_performance_hint_is_refused_naming_the_choices():
    from exporters.errors import ExportError

    with pytest.raises(ExportError, match="LATENCY, THROUGHPUT"):
        target.Settings(performance_hint="FASTEST")
