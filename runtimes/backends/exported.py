"""Backend `exported`: the ExportedProgram (.pt2) run by PyTorch on the CPU."""
from __future__ import annotations

from pathlib import Path

from runtimes.backends.common import availability, torch_problem, torch_runner

NAME = "exported"
FILE = "model.pt2"


def problem(requirements: dict, profile) -> str:
    return torch_problem(profile.libraries)


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"PyTorch {p.libraries['torch']}")


def load(path: Path, requirements: dict, profile, threads: int | None = None):
    """Never `torch.export.load`: it can unpickle and run code from the file (see runtimes.backends.pt2_safe)."""
    from runtimes.backends.pt2_safe import load_program

    return torch_runner(load_program(Path(path) / FILE).module(), threads=threads)
