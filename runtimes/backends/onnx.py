"""Backend `onnx`: ONNX Runtime, with its CUDA provider where it has one, else the CPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.backends.common import availability, contiguous

NAME = "onnx"
FILE = "model.onnx"


def problem(requirements: dict, profile) -> str:
    return "" if "onnxruntime" in profile.libraries else 'onnxruntime is not installed: pip install "neat-deploy[onnx]"'


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"onnxruntime {p.libraries['onnxruntime']} "
                                           f"({', '.join(p.libraries.get('onnxruntime_providers', []))})")


def providers(profile) -> list[str]:
    """The execution providers a session uses on this profile, best first."""
    gpu = [p for p in ("CUDAExecutionProvider",) if p in profile.libraries.get("onnxruntime_providers", [])]
    return gpu + ["CPUExecutionProvider"]


def load(path: Path, requirements: dict, profile, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:  # this session's own pools (runtimes.threads): nothing process-wide changes
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(Path(path) / FILE), options, providers=providers(profile))
    names = [i.name for i in session.get_inputs()]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {n: contiguous(a) for n, a in zip(names, arrays)})

    run.session = session  # ONNX Runtime's own session: its options, providers and profiling
    return run
