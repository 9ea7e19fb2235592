"""What every target module returns, and the small helpers they share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable



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
