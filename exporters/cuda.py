"""Target `cuda`: an AOTInductor package compiled for the NVIDIA GPU of this machine."""
from __future__ import annotations

from pathlib import Path

from exporters import aoti
from exporters.aoti import Settings  # the settings both AOTInductor targets share
from exporters.capture import Captured
from exporters.target import Built, Execution

NAME = "cuda"
PRECISIONS = ("fp32",)


def is_available() -> tuple[bool, str]:
    from runtimes.backends import cuda as backend

    ok, why = backend.is_available()
    return ok, why if ok else f"{why}: build the cuda target on a machine with an NVIDIA GPU"


def export(cap: Captured, out: Path, settings: Settings) -> Built:
    return aoti.build(cap, out, "cuda", settings.max_autotune)


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    return aoti.runner(artifact_dir, requirements, "cuda")
