"""What every target module returns, and the small helpers they share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Settings:
    """What every target's Settings starts from: the precision travels with a target's own options."""

    precision: str = "fp32"   # fp32 | fp16 | int8 (each target lists the ones it builds in PRECISIONS)


@dataclass
class Built:
    """A target's build result: what built it, what running it needs, the settings used."""

    toolchain: dict
    requirements: dict
    settings: dict = field(default_factory=dict)


@dataclass
class Execution:
    """How a built artifact can be checked on this machine (each target's `runner(artifact_dir, requirements)`).

    `run` executes it, and `method` says how (e.g. "executed: ONNX Runtime, CPU provider"); when it cannot
    run here, `run` is None and `verdict` / `method` say what stands instead ("built, not executed")."""

    run: Callable | None
    method: str
    verdict: str = ""


def versions(*modules: str) -> dict:
    """{module: version} for the importable ones."""
    import importlib

    out = {}
    for name in modules:
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "unknown")
        except ImportError:
            continue
    return out


def execute(target: str, artifact_dir, requirements: dict, method: str) -> Execution:
    """A built artifact through the runtime backend an application would use, when this machine can run
    it (the backend's own `problem` decides); otherwise "not verified", with the reason."""
    from runtimes import backends
    from runtimes.profile import detect

    backend, profile = backends.get(target), detect()
    why = backend.problem(requirements, profile)
    if why:
        return Execution(None, f"not verified: {why}", "not verified")
    return Execution(backend.load(artifact_dir, requirements, profile), method)
