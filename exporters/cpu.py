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
    from runtimes.aoti import is_available as available

    return available("cpu")


def export(cap: Captured, out: Path, precision: str, settings: Settings) -> Built:
    return aoti.build(cap, out, "cpu", settings.max_autotune)


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    return aoti.runner(artifact_dir, "cpu")
