"""Backend `executorch`: a method of an ExecuTorch program (.pte, XNNPACK delegate) run through ExecuTorch's
runtime bindings (executorch.runtime).

An artifact holds one program, `model.pte`, with the chunk forward ("forward") and every method; each
directory (the artifact's and each `<method>/`) has a `program.json` naming the program file and the method
(exporters.executorch). A program file is loaded once per process and shared by the methods that name it.

Threads: XNNPACK's threadpool is one per process, and resetting it (`_unsafe_reset_threadpool`) frees the pool
that every method loaded before holds: executing a method after that segfaulted the process (a verification
load, then a session load with another count: a killed pytest-xdist worker). So the count given at load is
applied only while no method has been loaded in this process; later loads keep the pool (the first count wins;
`run.threads` says which).
Inputs are checked against the method's metadata (count, dtype, rank, the memory-planned upper bounds) before
execute, and non-contiguous or read-only arrays are copied; a shape the runtime still refuses (a static
dimension, inputs of different batch) is an InputError too, never a crash. Outputs are copied out, because the
method's planned buffers are overwritten by its next call.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from runtimes.backends.common import availability
from runtimes.errors import BackendUnavailable, InputError

NAME = "executorch"
FILE = "program.json"     # which program file and method a directory runs
INDEX = FILE
PROGRAM = "model.pte"
PROGRAMS = (PROGRAM, f"../{PROGRAM}")  # the only program files a directory may name (inside the artifact)
INSTALL = 'pip install "neat-deploy[executorch]"'
# ExecuTorch's ScalarType codes (TensorInfo.dtype()) -> numpy
DTYPES = {0: np.uint8, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.float16, 6: np.float32,
          7: np.float64, 11: np.bool_}
_programs: dict[tuple, object] = {}
_lock = threading.Lock()
_methods_loaded = False  # once a method exists, the threadpool must not be reset (see the module docstring)


def problem(requirements: dict, profile) -> str:
    have = profile.libraries.get("executorch")
    if not have:
        return f"executorch is not installed: {INSTALL}"
    built = requirements.get("executorch")
    if built and _release(have) < _release(built):
        return f"built with executorch {built}, this machine has {have}: upgrade executorch, or rebuild with " \
               "`neat export executorch`"
    return ""


def _names() -> list[str]:
    return [np.dtype(d).name for d in DTYPES.values()]


def _release(version: str) -> tuple[int, ...]:
    return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in version.split(".")[:2])


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"executorch {p.libraries['executorch']} (XNNPACK, CPU)")


def opens(requirements: dict) -> list[str]:
    return [FILE]


def _program(file: Path):
    from executorch.runtime import Runtime

    st = file.stat()
    key = (str(file.resolve()), st.st_mtime_ns, st.st_size)
    with _lock:
        if key not in _programs:
            _programs[key] = Runtime.get().load_program(file)
        return _programs[key]


def load(path: Path, requirements: dict, profile, threads: int | None = None):
    try:
        from executorch.extension.pybindings import portable_lib
        import torch
    except ImportError as exc:
        raise BackendUnavailable(f"executorch is not installed: {INSTALL}") from exc

    path = Path(path)
    index = json.loads((path / FILE).read_text())
    if index.get("program") not in PROGRAMS:
        raise BackendUnavailable(f"{path / FILE} names program {index.get('program')!r}, not one of "
                                 f"{', '.join(PROGRAMS)}: re-export the artifact with `neat export executorch`")
    program, name = _program(path / index["program"]), index["method"]
    if name not in program.method_names:
        raise BackendUnavailable(f"{path / index['program']} has no method {name!r} (it has "
                                 f"{', '.join(sorted(program.method_names))}): re-export it")
    method = _load_method(program, name, threads, portable_lib)
    meta = method.metadata
    inputs = [meta.input_tensor_meta(i) for i in range(meta.num_inputs())]
    specs = [(DTYPES.get(t.dtype()), tuple(t.sizes())) for t in inputs]
    lock = threading.Lock()

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        if len(arrays) != len(specs):
            raise InputError(f"{path.name}: method {name!r} expects {len(specs)} inputs, got {len(arrays)}")
        tensors = []
        for i, (a, (dtype, bound)) in enumerate(zip(arrays, specs)):
            a = np.asarray(a)
            if dtype is None:
                raise InputError(f"input {i} of {name!r} has a dtype this backend cannot pass (ExecuTorch code "
                                 f"{inputs[i].dtype()}): re-export the model with {', '.join(_names())} inputs")
            if a.dtype != dtype:
                raise InputError(f"input {i} of {name!r} is {a.dtype}, the method takes {np.dtype(dtype)}: "
                                 f"pass .astype(np.{np.dtype(dtype)})")
            if a.ndim != len(bound) or any(n > b for n, b in zip(a.shape, bound)):
                raise InputError(f"input {i} of {name!r} has shape {list(a.shape)}, the method takes at most "
                                 f"{list(bound)}: split the batch, or re-export with a larger batch bound")
            if not (a.flags.c_contiguous and a.flags.writeable):
                a = np.array(a, order="C")
            tensors.append(torch.from_numpy(a))
        with lock:
            try:
                outs = method.execute(tensors)
            except RuntimeError as exc:  # the runtime refused the inputs, or a kernel failed on them (token ids)
                raise InputError(f"{path.name}: method {name!r} refused inputs of shapes "
                                 f"{[list(t.shape) for t in tensors]} (planned for {[list(b) for _, b in specs]}; "
                                 f"static dimensions must match, dynamic ones up to the bound; token ids in the "
                                 f"vocabulary): {exc}") from exc
            return [o.numpy().copy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outs]

    run.method, run.specs, run.threads = name, specs, portable_lib._threadpool_get_thread_count()
    return run


def _load_method(program, name: str, threads: int | None, portable_lib):
    global _methods_loaded
    with _lock:
        if threads and not _methods_loaded and portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(int(threads))
        _methods_loaded = True
        return program.load_method(name)
