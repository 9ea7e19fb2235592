"""Backend `openvino`: an OpenVINO IR (model.xml + model.bin) compiled for the CPU plugin.

What keeps a call cheap (measured on NEAT's decode methods, 31 state tensors, 2 busy cores; see
benchmarks/NOTES.md, "OpenVINO"):

- a thread count, always: with none, the CPU plugin's LATENCY hint takes every core, and on a busy machine a
  byte step went from 0.9 to 15 ms. The runtime's thread policy (runtimes.threads) gives it one.
- static shapes: the IR keeps the manifest's dynamic dimensions, and the CPU plugin runs a dynamic model
  through shape inference and buffer allocation on every call (a NEAT step 3.6 ms dynamic, 1.9 ms static).
  So each distinct set of input shapes gets its own compiled model, reshaped once (up to STATIC_SHAPES of
  them; past that the dynamic one serves), and one InferRequest each, reused.
- inputs copied by index into the request's own input buffers. Binding the caller's arrays instead
  (`set_input_tensor` of an `ov.Tensor` sharing their memory, or `infer(arrays, share_inputs=True)`) looks
  cheaper but makes the plugin rebind new memory on every call: a NEAT step took 3.1 to 3.9 ms that way
  against 1.6 ms copied (1.5 ms with nothing set). `infer(arrays)` without sharing: 8 ms. Outputs are
  copied out, because the request's buffers are overwritten by its next call and state outputs come back
  as the next inputs.

NEAT_OPENVINO_CACHE names a directory for OpenVINO's compiled-model cache (CACHE_DIR), which makes a second
load of the same artifact quicker; unset, nothing is written.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from runtimes.backends.common import availability, contiguous
from runtimes.errors import BackendUnavailable, InputError

NAME = "openvino"
FILE = "model.xml"
WEIGHTS = "model.bin"
STATIC_SHAPES = 4           # distinct input shape sets compiled statically per file; then the dynamic model
DEFAULT_HINT = "LATENCY"    # PERFORMANCE_HINT when the manifest names none
CACHE_ENV = "NEAT_OPENVINO_CACHE"


def problem(requirements: dict, profile) -> str:
    have = profile.libraries.get("openvino")
    if not have:
        return 'openvino is not installed: pip install "neat-deploy[openvino]"'
    built = requirements.get("openvino")
    if built and _release(have) < _release(built):
        return f"built with openvino {built}, this machine has {have}: upgrade openvino, or rebuild with `neat export openvino`"
    return ""


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"openvino {p.libraries['openvino']} (CPU plugin)")


def config(requirements: dict, threads: int | None) -> dict:
    """The CPU plugin's properties for an artifact with these requirements."""
    import openvino as ov

    cfg = {"PERFORMANCE_HINT": requirements.get("performance_hint") or DEFAULT_HINT}
    threads = threads or requirements.get("threads")
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    # fp32 artifacts compute in f32 (the plugin would pick bf16 on CPUs with AMX/AVX512-BF16); fp16 ones in f16
    # where the CPU computes it natively, else f32 (their weights are still stored in fp16)
    want = "f16" if requirements.get("precision") == "fp16" and "FP16" in _capabilities(ov) else "f32"
    cfg["INFERENCE_PRECISION_HINT"] = want
    cache = os.environ.get(CACHE_ENV)
    if cache:
        cfg["CACHE_DIR"] = cache
    return cfg


def _capabilities(ov) -> list[str]:
    try:
        return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # an old plugin without the property: f32 is always right
        return []


def load(path: Path, requirements: dict, profile, threads: int | None = None):
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable('openvino is not installed: pip install "neat-deploy[openvino]"') from exc

    xml = Path(path) / FILE
    core = ov.Core()
    model = core.read_model(str(xml))
    cfg = config(requirements, threads)
    inputs = [(p.get_any_name(), p.get_partial_shape()) for p in model.inputs]
    n_out = len(model.outputs)
    compiled: dict[tuple, tuple] = {}  # input shapes -> (compiled model, its InferRequest)
    lock = threading.Lock()

    def request(shapes: tuple):
        if shapes in compiled:
            return compiled[shapes][1]
        if len(compiled) < STATIC_SHAPES:
            static = model.clone()
            static.reshape({i: ov.PartialShape(list(s)) for i, s in enumerate(shapes)})
            key = shapes
        else:
            static, key = model, "dynamic"
            if key in compiled:
                return compiled[key][1]
        cm = core.compile_model(static, "CPU", cfg)
        compiled[key] = (cm, cm.create_infer_request())
        return compiled[key][1]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        if len(arrays) != len(inputs):
            raise InputError(f"{xml.parent.name}: expects {len(inputs)} inputs ({', '.join(n for n, _ in inputs)}), "
                             f"got {len(arrays)}")
        arrays = [np.asarray(a) for a in arrays]
        for (name, shape), a in zip(inputs, arrays):
            if not shape.rank.is_dynamic and (shape.rank.get_length() != a.ndim
                                              or not shape.compatible(ov.PartialShape(list(a.shape)))):
                raise InputError(f"input {name!r} has shape {list(a.shape)}, the model takes {shape}")
        with lock:  # one request per shape set: calls from several threads take turns
            req = request(tuple(a.shape for a in arrays))
            if req is compiled.get("dynamic", (None, None))[1]:  # no buffers of its own: the arrays themselves
                for i, a in enumerate(arrays):
                    a = contiguous(a)
                    req.set_input_tensor(i, ov.Tensor(a, shared_memory=a.flags.writeable))
            else:  # copied into the request's own input buffers (faster than binding new memory: see above)
                for i, ((name, _), a) in enumerate(zip(inputs, arrays)):
                    dst = req.get_input_tensor(i).data
                    if dst.dtype != a.dtype:
                        raise InputError(f"input {name!r} is {a.dtype}, the model takes {dst.dtype}")
                    dst[...] = a
            req.infer()
            return [np.array(req.get_output_tensor(i).data, copy=True) for i in range(n_out)]

    run.compiled = compiled  # the compiled models by input shapes (their properties; benchmarks)
    run.config = cfg
    return run
