"""Target `openvino`: OpenVINO IR (model.xml + model.bin) converted from our ONNX translation of the capture.

Why from the ONNX file rather than the ExportedProgram: the translation is already made once per capture for
the `onnx` and `tensorrt` targets (exporters.onnx.write_onnx shares it), it carries the spec's input and
output names as they are, and what OpenVINO reads from it is the graph ONNX Runtime verifies; OpenVINO's
ONNX frontend is its most used path. (It converts the ExportedProgram too, but names the outputs after graph
nodes, `linear_1:0`, and makes every dimension dynamic, the fixed ones too; tried on tests/exporters/toy.py.)
The dynamic dimensions stay dynamic in the IR; the runtime backend compiles each shape it sees statically
(runtimes.backends.openvino).

fp32: the graph as is, computed in f32. fp16: weights stored in fp16 (`compress_to_fp16`), computed in f16 on
CPUs that do it natively and in f32 elsewhere (the plugin decompresses the weights once, at compile time).
Verified by running it with OpenVINO's CPU plugin, like an application would (the backend of the same name).

Not in `neat export all`'s default set: for NEAT its verification (every method, the decode protocol) adds
more than the suite's budget allows; `neat export openvino` builds it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from exporters.capture import Captured
from exporters.errors import ConversionError, ExportError
from exporters.target import Built, Execution, execute, versions
from exporters.target import Settings as TargetSettings

NAME = "openvino"
PRECISIONS = ("fp32", "fp16")
NOT_IN_ALL = "left out of `all` (verifying every decode method takes long): `neat export openvino` builds it"
HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
DEFAULT_HINT = "LATENCY"


@dataclass
class Settings(TargetSettings):
    performance_hint: str = DEFAULT_HINT  # OpenVINO's PERFORMANCE_HINT at run time: LATENCY (one stream) or THROUGHPUT
    openvino_threads: int | None = None   # INFERENCE_NUM_THREADS when the runtime gives none (it always does:
                                          # runtimes.threads); None: the runtime's thread policy alone

    def __post_init__(self):
        if self.performance_hint not in HINTS:
            raise ExportError(f"performance_hint {self.performance_hint!r} is not one of {', '.join(HINTS)}")


def is_available() -> tuple[bool, str]:
    from exporters import onnx

    ok, why = onnx.is_available()
    if not ok:
        return False, f"the openvino target converts the ONNX translation: {why}"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False, 'openvino is not installed: pip install "neat-deploy[openvino]"'
    from runtimes.backends import openvino as backend

    return backend.is_available()


def export(cap: Captured, out: Path, settings: Settings) -> Built:
    from exporters.onnx import DEFAULT_OPSET, write_onnx

    src = out / "model.onnx.tmp"
    write_onnx(cap, src, DEFAULT_OPSET)
    try:
        requirements = convert(src, out, settings, cap.spec.name)
    finally:
        os.unlink(src)
    return Built(toolchain=versions("torch", "onnx", "openvino"), requirements=requirements,
                 settings={"performance_hint": settings.performance_hint, "opset": DEFAULT_OPSET})


def convert(onnx_file: Path, out: Path, settings: Settings, name: str = "the model") -> dict:
    """An ONNX file to the IR in `out` at the settings' precision; what running it needs (the requirements)."""
    import openvino as ov

    from runtimes.backends.openvino import FILE

    try:
        model = ov.convert_model(str(onnx_file))
    except Exception as exc:  # the frontend raises OpConversionFailure and others: the graph did not convert
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ConversionError(f"OpenVINO could not convert {name}'s ONNX graph: {type(exc).__name__}: "
                              f"{first}. Export another target (onnx, cpu)") from exc
    ov.save_model(model, str(out / FILE), compress_to_fp16=settings.precision == "fp16")
    requirements = {"openvino": ov.__version__.split("-")[0], "precision": settings.precision,
                    "performance_hint": settings.performance_hint}
    if settings.openvino_threads:
        requirements["threads"] = settings.openvino_threads
    return requirements


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    return execute(NAME, artifact_dir, requirements,
                   f"executed: OpenVINO CPU plugin, {requirements.get('performance_hint', DEFAULT_HINT)}")
