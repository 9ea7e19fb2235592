"""Target `exported`: the ExportedProgram itself, saved as .pt2 (runs anywhere PyTorch runs)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporters.capture import Captured
from exporters.target import Built, Execution, execute, versions
from exporters.target import Settings as TargetSettings

NAME = "exported"
PRECISIONS = ("fp32",)


@dataclass
class Settings(TargetSettings):
    """No options beyond the precision (fp32 only): the artifact is the capture, verbatim."""


def is_available() -> tuple[bool, str]:
    return True, "PyTorch"


def export(cap: Captured, out: Path, settings: Settings) -> Built:
    import torch

    from runtimes.backends.exported import FILE

    torch.export.save(cap.program, str(out / FILE))
    return Built(toolchain=versions("torch"), requirements={"torch": torch.__version__.split("+")[0]})


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    return execute(NAME, artifact_dir, requirements, "executed: pt2_safe.load_program(...).module() on CPU")
