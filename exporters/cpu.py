"""Target `cpu`: an AOTInductor package compiled for this CPU (x86 or ARM)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporters import aoti
from exporters.capture import Captured
from exporters.target import Built, Execution

NAME = "cpu"
PRECISIONS = ("fp32",)


@dataclass
class Settings:
    max_autotune: bool = False  # let Inductor benchmark kernel choices (slower build, sometimes faster code)


def is_available() -> tuple[bool, str]:
    from runtimes.aoti import is_available as available

    return available("cpu")


def export(cap: Captured, out: Path, precision: str, settings: Settings) -> Built:
    return aoti.build(cap, out, "cpu", settings.max_autotune)


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    return aoti.runner(artifact_dir, "cpu")
