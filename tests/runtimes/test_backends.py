"""The runtime backend registry: every backend has the same interface, and each one alone decides, from the
manifest's requirements and a profile (plain data), whether an artifact can run on a machine."""
import inspect

import pytest

from runtimes import backends
from runtimes.errors import BackendUnavailable
from runtimes.profile import CudaDevice, HardwareProfile

SIGNATURES = {"is_available": [], "problem": ["requirements", "profile"],
              "load": ["path", "requirements", "profile", "threads"]}


def bare(**changes) -> HardwareProfile:
    """A machine with nothing installed."""
    return HardwareProfile(**{**dict(os="Linux", arch="x86_64", cpu="test", isa=("avx2",)), **changes})


TORCH = {"torch": "2.13.0", "aoti": "2.13.0"}
GPU = (CudaDevice("test GPU", "8.6", 2**34),)
# per backend: (requirements, a profile it runs on, a profile it does not run on, words the reason names)
CASES = {
    "exported": ({}, bare(libraries=TORCH), bare(), "PyTorch"),
    "onnx": ({}, bare(libraries={"onnxruntime": "1.32"}), bare(libraries=TORCH), "onnxruntime"),
    "openvino": ({"openvino": "2026.4.1"}, bare(libraries={"openvino": "2026.5.0"}),
                 bare(libraries={"openvino": "2025.3.0"}), "built with openvino 2026.4.1"),
    "executorch": ({"executorch": "1.5.1"}, bare(libraries={"executorch": "1.5.1"}),
                   bare(libraries={"executorch": "1.4.0"}), "built with executorch 1.5.1"),
    "cpu": ({"torch": "2.13.0", "arch": "x86_64", "cpu_isa": ["avx2"]}, bare(libraries=TORCH),
            bare(libraries=TORCH, isa=()), "avx2"),
    "cuda": ({"torch": "2.13.0", "compute_capability": "8.6"}, bare(libraries=TORCH, cuda=GPU),
             bare(libraries=TORCH, cuda=(CudaDevice("old GPU", "7.5", 2**33),)), "compute capability 8.6"),
    "tensorrt": ({"flavour": "tensorrt_rtx", "tensorrt_version": "1.2", "compute_capabilities": ["8.6"]},
                 bare(libraries={"tensorrt_rtx": "1.2"}, cuda=GPU), bare(libraries={"tensorrt_rtx": "1.3"}, cuda=GPU),
                 "built with tensorrt_rtx 1.2"),
    "coreml": ({}, bare(os="Darwin", libraries={"coremltools": "9.0"}), bare(libraries={"coremltools": "9.0"}),
               "macOS"),
    "mlx": ({"mlx": "0.32.4"}, bare(libraries={"mlx": "0.32.0"}), bare(libraries={"mlx": "0.33.0"}), "written by mlx 0.32.4"),
    "eager": ({"loader": "neat"}, bare(libraries=TORCH), bare(libraries=TORCH), None),
}


def test_every_backend_exposes_the_same_names():
    assert set(CASES) == set(backends.BACKENDS)
    for name in backends.BACKENDS:
        module = backends.get(name)
        assert [n for n in backends.INTERFACE if not hasattr(module, n)] == [], name
        assert module.NAME == name and isinstance(module.FILE, str) and module.FILE
        for fn, params in SIGNATURES.items():
            assert list(inspect.signature(getattr(module, fn)).parameters) == params, (name, fn)
        ok, why = module.is_available()
        assert isinstance(ok, bool) and isinstance(why, str) and why, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_backend_decides_from_requirements_and_profile(name):
    requirements, runs, refuses, words = CASES[name]
    module = backends.get(name)
    assert module.problem(requirements, runs) == ""
    if words is not None:
        assert words in module.problem(requirements, refuses)
    assert module.problem(requirements, bare()) != ""  # nothing installed: never runs


def test_eager_needs_an_installed_reference_loader():
    eager = backends.get("eager")
    assert "no installed package provides the reference loader 'os.system'" in eager.problem(
        {"loader": "os.system"}, bare(libraries=TORCH))
    assert "names no reference loader" in eager.problem({}, bare(libraries=TORCH))
    with pytest.raises(BackendUnavailable, match="reference loader 'nope'"):
        eager.loader("nope")


def test_an_unknown_target_is_refused_with_what_this_version_runs():
    with pytest.raises(BackendUnavailable, match=r"no runtime for target 'tpu'.*exported, onnx"):
        backends.get("tpu")
