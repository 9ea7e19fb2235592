"""Backend `cpu`: an AOTInductor package (.pt2) compiled ahead of time for a CPU. `cuda` shares its loader.

Loaded with PyTorch's C++ package loader directly: `torch._inductor.aoti_load_package` would first import
Inductor and Dynamo and probe the CPU's vector ISA by compiling test programs (~2.5 s of a 3 s cold start
here). The probe only guards against a package built for CPU features this machine lacks, and `problem`
already refuses that from the manifest (`cpu_isa`) before anything is loaded.
"""
from __future__ import annotations

from pathlib import Path

from runtimes.backends.common import availability, torch_runner

NAME = "cpu"
FILE = "model.pt2"


def package_problem(requirements: dict, profile, target: str) -> str:
    """What both AOTInductor targets need: PyTorch with AOTInductor, the same torch and CPU architecture."""
    libs = profile.libraries
    if "aoti" not in libs:
        return "PyTorch with AOTInductor is not installed: pip install torch"
    if requirements.get("torch") and requirements["torch"] != libs.get("torch"):
        return (f"built with torch {requirements['torch']}, this machine has {libs.get('torch')}: "
                f"rebuild with `neat export {target}`")
    if requirements.get("arch") and requirements["arch"] != profile.arch:
        return f"built for {requirements['arch']}, this CPU is {profile.arch}: rebuild with `neat export {target}` on it"
    return ""


def problem(requirements: dict, profile) -> str:
    missing = [f for f in requirements.get("cpu_isa", []) if f not in profile.isa]
    return package_problem(requirements, profile, NAME) or (
        f"needs CPU features {', '.join(missing)} that this CPU lacks: rebuild with `neat export cpu` on it"
        if missing else "")


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"AOTInductor (torch {p.libraries['torch']})")


def load_package(path: Path, device: str, threads: int | None = None):
    import torch

    try:  # (path, model name in the package, run single-threaded, runners, device index: -1 = the current one)
        loader = torch._C._aoti.AOTIModelPackageLoader(str(Path(path) / FILE), "model", False, 1, -1)
    except TypeError:  # a torch whose loader takes other arguments: its own (slower) entry point
        loader = torch._inductor.aoti_load_package(str(Path(path) / FILE)).loader
    # inputs and outputs are flat tuples of tensors, so the package's call spec is the identity
    return torch_runner(lambda *tensors: loader.boxed_run(list(tensors)), device, threads=threads)


def load(path: Path, requirements: dict, profile, threads: int | None = None):
    return load_package(path, "cpu", threads)
