"""Backend `cuda`: an AOTInductor package (.pt2) compiled ahead of time for one NVIDIA compute capability."""
from __future__ import annotations

from pathlib import Path

from runtimes.backends.common import availability
from runtimes.backends.cpu import load_package, package_problem

NAME = "cuda"
FILE = "model.pt2"


def problem(requirements: dict, profile) -> str:
    why = package_problem(requirements, profile, NAME)
    if why:
        return why
    here = [d.compute_capability for d in profile.cuda]
    if not here:
        return "no NVIDIA GPU here"
    built = requirements.get("compute_capability")
    if built and built not in here:
        return (f"built for compute capability {built}, this GPU is {', '.join(here)}: "
                "rebuild with `neat export cuda` on it")
    return ""


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"AOTInductor on {p.cuda[0].name}")


def load(path: Path, requirements: dict, profile, threads: int | None = None):
    return load_package(path, "cuda", threads)
