"""Backend `onnx`: ONNX Runtime (CPU, or CUDA/TensorRT providers where installed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

NAME = "onnx"
FILE = "model.onnx"


def is_available() -> tuple[bool, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return False, 'onnxruntime is not installed: pip install "neat-deploy[onnx]"'
    return True, f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})"


def load(artifact_dir: Path, providers: list[str] | None = None, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(artifact_dir / FILE), options, providers=providers or ["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {n: np.ascontiguousarray(a) for n, a in zip(names, arrays)})

    return run
