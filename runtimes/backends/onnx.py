"""Backend `onnx`: ONNX Runtime, with its CUDA provider where it has one, else the CPU.

On the CPU it loads the graph ONNX Runtime optimized once at export (OPTIMIZED, when the artifact's
requirements name the ONNX Runtime version that made it and this one is the same) without optimizing it again:
the five sessions of the NEAT bundle then open 2.8x faster, and run as fast (benchmarks/NOTES.md, issue 27).
Anywhere else (another version, the CUDA provider) it optimizes FILE as it loads, as before."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.backends.common import availability, contiguous

NAME = "onnx"
FILE = "model.onnx"
OPTIMIZED = "model.ort.onnx"  # FILE after ONNX Runtime's EXTENDED graph optimizations on its CPU provider


def problem(requirements: dict, profile) -> str:
    return "" if "onnxruntime" in profile.libraries else 'onnxruntime is not installed: pip install "neat-deploy[onnx]"'


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"onnxruntime {p.libraries['onnxruntime']} "
                                           f"({', '.join(p.libraries.get('onnxruntime_providers', []))})")


def providers(profile) -> list[str]:
    """The execution providers a session uses on this profile, best first."""
    gpu = [p for p in ("CUDAExecutionProvider",) if p in profile.libraries.get("onnxruntime_providers", [])]
    return gpu + ["CPUExecutionProvider"]


def opens(requirements: dict) -> list[str]:
    """The files of an artifact directory it may load (runtimes.bundle checks that the manifest lists them)."""
    return [FILE, OPTIMIZED] if requirements.get("ort_optimized") else [FILE]


def preoptimized(requirements: dict, profile) -> bool:
    """Whether to load OPTIMIZED as it is: made by this very ONNX Runtime, to run on its CPU provider."""
    import onnxruntime as ort

    return requirements.get("ort_optimized") == ort.__version__ and providers(profile) == ["CPUExecutionProvider"]


def load(path: Path, requirements: dict, profile, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    pre = preoptimized(requirements, profile)
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if pre
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if threads:  # this session's own pools (runtimes.threads): nothing process-wide changes
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(Path(path) / (OPTIMIZED if pre else FILE)), options, providers=providers(profile))
    names = [i.name for i in session.get_inputs()]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {n: contiguous(a) for n, a in zip(names, arrays)})

    run.session = session  # ONNX Runtime's own session: its options, providers and profiling
    run.file = OPTIMIZED if pre else FILE
    return run
