"""The runtime backends: one module per target a manifest can name, found through this registry.

Every backend module has the same names (tests/runtimes/test_backends.py checks them all):

    NAME                               the manifest target it runs ("onnx", "cpu", ...; "eager": the reference)
    FILE                               the file it loads from an artifact directory
    is_available()                     (ok, why): whether this machine has what the backend needs, in words
    problem(requirements, profile)     why an artifact with these manifest requirements cannot run on a machine
                                       with this profile ('' when it can): decided from data, nothing is loaded
    load(path, requirements, profile, threads=None)
                                       a runner: numpy arrays in signature order -> list of numpy arrays;
                                       threads: its intra-op threads (runtimes.threads), None leaves the default
    opens(requirements)                optional: every file it may load from an artifact directory, when FILE
                                       is not the only one (each must be listed, and so hashed, in the manifest)

`select` ranks candidates; each backend alone knows its rules (libraries, versions, OS, CPU features,
compute capability). Adding a runtime is one module here and one line in BACKENDS.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from runtimes.errors import BackendUnavailable

BACKENDS = {
    "exported": "runtimes.backends.exported",
    "onnx": "runtimes.backends.onnx",
    "openvino": "runtimes.backends.openvino",
    "executorch": "runtimes.backends.executorch",
    "cpu": "runtimes.backends.cpu",
    "cuda": "runtimes.backends.cuda",
    "tensorrt": "runtimes.backends.tensorrt",
    "coreml": "runtimes.backends.coreml",
    "mlx": "runtimes.backends.mlx",
    "eager": "runtimes.backends.eager",
}
INTERFACE = ("NAME", "FILE", "is_available", "problem", "load")


def get(target: str) -> ModuleType:
    """The backend module for a manifest target (imported on first use: optional libraries stay unloaded)."""
    if target not in BACKENDS:
        raise BackendUnavailable(f"no runtime for target {target!r} in this version (it runs "
                                 f"{', '.join(BACKENDS)}): upgrade neat-deploy, or use another artifact")
    return importlib.import_module(BACKENDS[target])
