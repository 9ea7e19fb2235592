"""Target `cpu`: an AOTInductor package compiled for this CPU (x86 or ARM)."""
from __future__ import annotations

from pathlib import Path

from exporters import aoti
from exporters.aoti import Settings  # the settings both AOTInductor targets share
from exporters.capture import Captured
from exporters.target import Built, Execution

NAME = "cpu"
PRECISIONS = ("fp32",)


def is_available() -> tuple[bool, str]:
    from runtimes.backends import cpu as backend

    return backend.is_available()


def export(cap: Captured, out: Path, settings: Settings) -> Built:
    return aoti.build(cap, out, "cpu", settings.max_autotune)


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    return aoti.runner(artifact_dir, requirements, "cpu")
