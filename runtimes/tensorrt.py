"""Backend `tensorrt`: a serialized TensorRT engine executed on an NVIDIA GPU (I/O through torch CUDA tensors).

NOT VERIFIED HERE: the machines this project is developed and tested on have no NVIDIA GPU, so `load()`
has never executed an engine in this repository's CI; engines are built and checked up to execution
(`can_execute` says why not). Works with data-center `tensorrt` and with `tensorrt_rtx` (same runtime API).
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

NAME = "tensorrt"
ENGINE = "model.plan"


def _module(flavour: str):
    try:
        return importlib.import_module(flavour)
    except ImportError:
        return None


def can_execute(requirements: dict) -> tuple[bool, str]:
    """Whether this machine can run an engine with these requirements; the reason either way."""
    flavour = requirements.get("flavour", "tensorrt")
    trt = _module(flavour)
    if trt is None:
        return False, f"{flavour} is not installed here"
    if requirements.get("tensorrt_version") and trt.__version__ != requirements["tensorrt_version"]:
        return False, (f"engine built with {flavour} {requirements['tensorrt_version']}, this machine has "
                       f"{trt.__version__}: rebuild with `neat export tensorrt`")
    try:
        import torch
    except ImportError:
        return False, "PyTorch is needed for the engine's GPU buffers"
    if not torch.cuda.is_available():
        return False, "no NVIDIA GPU here"
    major, minor = torch.cuda.get_device_capability()
    here = f"{major}.{minor}"
    built = requirements.get("compute_capabilities") or []
    if built and here not in built:
        return False, (f"engine built for compute capability {', '.join(built)}, this GPU is {here}: "
                       f"rebuild with `neat export tensorrt --compute-capability {here}`")
    return True, f"{torch.cuda.get_device_name()} (compute capability {here})"


def load(artifact_dir: Path, flavour: str = ""):
    import torch

    trt = None
    for name in ([flavour] if flavour else ["tensorrt", "tensorrt_rtx"]):
        trt = _module(name)
        if trt is not None:
            break
    logger = trt.Logger(trt.Logger.ERROR)
    engine = trt.Runtime(logger).deserialize_cuda_engine((artifact_dir / ENGINE).read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32}
    stream = torch.cuda.Stream()

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        keep = []
        for n, a in zip(inputs, arrays):
            t = torch.from_numpy(np.ascontiguousarray(a)).to("cuda", dtypes[engine.get_tensor_dtype(n)])
            context.set_input_shape(n, tuple(t.shape))
            context.set_tensor_address(n, t.data_ptr())
            keep.append(t)
        results = []
        for n in outputs:
            t = torch.empty(tuple(context.get_tensor_shape(n)), dtype=dtypes[engine.get_tensor_dtype(n)], device="cuda")
            context.set_tensor_address(n, t.data_ptr())
            results.append(t)
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return [r.float().cpu().numpy() if r.dtype == torch.float16 else r.cpu().numpy() for r in results]

    return run
