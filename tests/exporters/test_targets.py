"""Every registered target, exercised with its real library on a non-NEAT module."""
import inspect
import platform

import pytest

from exporters.registry import TARGETS
from runtimes.bundle import read_manifest

# what each target's verdict is on this kind of machine (Linux, CPU only)
EXPECTED_HERE = {
    "exported": "passed",
    "onnx": "passed",
    "cpu": "passed",
    "coreml": "passed",  # evaluated off-device in NumPy
    "mlx": "passed",     # executed by MLX on the CPU (mlx[cpu])
    "tensorrt": "built, not executed",
    "openvino": "passed",  # not in `all`: the toy bundle names it (tests/exporters/conftest.py)
    "executorch": "passed",  # likewise
}
GPU_ONLY = {"cuda"}


def test_every_registered_target_is_covered_here():
    assert set(TARGETS) == set(EXPECTED_HERE) | GPU_ONLY


def test_every_target_has_the_same_interface_and_carries_precision_in_its_settings():
    from dataclasses import fields

    from runtimes import backends

    for name, module in TARGETS.items():
        assert module.NAME == name and module.PRECISIONS
        assert [n for n in ("Settings", "is_available", "export", "runner") if not hasattr(module, n)] == [], name
        assert list(inspect.signature(module.export).parameters) == ["cap", "out", "settings"], name
        assert "precision" in {f.name for f in fields(module.Settings)}, name
        assert backends.get(name).NAME == name  # every target has a runtime backend


@pytest.mark.parametrize("target", sorted(EXPECTED_HERE))
def test_target_builds_and_verifies(toy_bundle, target):
    if not TARGETS[target].is_available()[0]:
        pytest.skip(f"{target}: {TARGETS[target].is_available()[1]}")
    bundle, outcomes = toy_bundle
    outcome = outcomes[target]
    want = EXPECTED_HERE[target]
    if target == "coreml" and platform.system() == "Darwin":
        want = "passed"
    assert outcome.verdict == want, outcome.message
    art = read_manifest(bundle).artifacts[f"{target}-fp32"]
    assert art.parity.verdict == want and art.files and all(f.size > 0 for f in art.files)
    assert art.parity.method
    if want == "passed":
        assert art.parity.worst["max_abs"] <= 1e-4 and art.parity.worst["argmax"] == 1.0


def test_cuda_target_needs_a_gpu():
    ok, why = TARGETS["cuda"].is_available()
    import torch

    assert ok == torch.cuda.is_available()
    if not ok:
        assert "NVIDIA GPU" in why


def test_tensorrt_engine_records_what_it_needs(toy_bundle):
    if not TARGETS["tensorrt"].is_available()[0]:
        pytest.skip(TARGETS["tensorrt"].is_available()[1])
    bundle, _ = toy_bundle
    art = read_manifest(bundle).artifacts["tensorrt-fp32"]
    req = art.requirements
    assert req["compute_capabilities"] == ["8.6"] and req["tensorrt_version"] and req["flavour"]
    assert "not executed" in art.parity.method
    names = {f.path.split("/")[-1] for f in art.files}
    assert "model.plan" in names
    if req["flavour"] == "tensorrt":  # data-center TensorRT keeps its timing cache with the engine
        assert "timing.cache" in names and art.settings["timing_cache"] in ("created", "reused")
    else:  # TensorRT for RTX deprecated it: say so instead of pretending
        assert "timing.cache" not in names and art.settings["timing_cache"].startswith("not used")


def test_coreml_state_keeps_the_same_explicit_interface(toy, tmp_path):
    """Float state as CoreML state (iOS 18, fp16, fixed batch), checked through the same verification."""
    from exporters.build import export_bundle
    from exporters.coreml_numpy import read_spec
    from toy import toy_spec

    if not TARGETS["coreml"].is_available()[0]:
        pytest.skip(TARGETS["coreml"].is_available()[1])
    fixed = toy_spec(batch=(1, 1))
    outcomes = export_bundle(fixed, ["coreml"], tmp_path / "b", "fp16",
                             {"coreml_state": True, "coreml_target": "iOS18"})
    assert outcomes[0].verdict == "passed", outcomes[0].message
    spec, _ = read_spec(str(tmp_path / "b" / "coreml-fp16" / "model.mlpackage"))
    assert [s.name for s in spec.description.state] == ["h"]
    bad = export_bundle(toy, ["coreml"], tmp_path / "c", "fp16", {"coreml_state": True, "coreml_target": "iOS18"})
    assert bad[0].verdict == "error" and "fixed batch" in bad[0].message
    bad = export_bundle(fixed, ["coreml"], tmp_path / "d", "fp32", {"coreml_state": True, "coreml_target": "iOS18"})
    assert bad[0].verdict == "error" and "fp16 only" in bad[0].message
