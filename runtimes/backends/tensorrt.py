"""Backend `tensorrt`: a serialized TensorRT engine executed on an NVIDIA GPU (I/O through torch CUDA tensors).

NOT VERIFIED HERE: the machines this project is developed and tested on have no GPU that TensorRT runs on,
so `load()` has never executed an engine in this repository's CI; engines are built and checked up to
execution (`problem` says why not). Works with data-center `tensorrt` and with `tensorrt_rtx` (same runtime
API): the manifest's requirements name the flavour an engine was built with.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from runtimes.backends.common import availability, contiguous

NAME = "tensorrt"
FILE = "model.plan"
FLAVOURS = ("tensorrt", "tensorrt_rtx")


def problem(requirements: dict, profile) -> str:
    libs = profile.libraries
    if requirements.get("flavour") and requirements["flavour"] not in FLAVOURS:
        return f"engine built with an unknown TensorRT flavour {requirements['flavour']!r} (this version runs " \
               f"{' and '.join(FLAVOURS)}): rebuild with `neat export tensorrt`"
    flavours = [requirements["flavour"]] if requirements.get("flavour") else list(FLAVOURS)
    flavour = next((f for f in flavours if f in libs), None)
    if flavour is None:
        return f"{' or '.join(flavours)} is not installed here"
    built = requirements.get("tensorrt_version")
    if built and built != libs[flavour]:
        return (f"engine built with {flavour} {built}, this machine has {libs[flavour]}: "
                "rebuild with `neat export tensorrt`")
    here = [d.compute_capability for d in profile.cuda]
    if not here:
        return "no NVIDIA GPU here"
    caps = requirements.get("compute_capabilities") or []
    if caps and not set(caps) & set(here):
        return (f"engine built for compute capability {', '.join(caps)}, this GPU is {', '.join(here)}: "
                f"rebuild with `neat export tensorrt --compute-capability {here[0]}`")
    return ""


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"{p.cuda[0].name} (compute capability {p.cuda[0].compute_capability})")


def load(path: Path, requirements: dict, profile, threads: int | None = None):  # the GPU's work: threads unused
    import torch

    flavour = next(f for f in ([requirements.get("flavour")] if requirements.get("flavour") else FLAVOURS)
                   if f in profile.libraries)
    trt = importlib.import_module(flavour)
    logger = trt.Logger(trt.Logger.ERROR)
    engine = trt.Runtime(logger).deserialize_cuda_engine((Path(path) / FILE).read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32}
    stream = torch.cuda.Stream()

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        keep = []
        for n, a in zip(inputs, arrays):
            t = torch.from_numpy(contiguous(a)).to("cuda", dtypes[engine.get_tensor_dtype(n)])
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
