"""Backend `eager`: the reference model, rebuilt from the weights the bundle carries (the last resort).

The manifest names the function that rebuilds it by an entry-point name (`model.reference_loader`, passed
here as requirements["loader"]), which installed packages register in the group
`neat_deploy.reference_loaders` (NEAT registers `neat`). It is resolved only when this backend is used, so
`runtimes` itself imports no model code, and a manifest can only name a loader some installed package
declares, never an arbitrary function. `path` is the weights file.
"""
from __future__ import annotations

from pathlib import Path

from runtimes.backends.common import availability, torch_problem, torch_runner
from runtimes.errors import BackendUnavailable

NAME = "eager"
FILE = "reference"  # the bundle's directory of reference weights
GROUP = "neat_deploy.reference_loaders"


def _entry(name: str):
    from importlib.metadata import entry_points

    found = entry_points(group=GROUP, name=name) if name else ()
    return next(iter(found), None)


def _loader_problem(name: str) -> str:
    if not name:
        return "the bundle names no reference loader: re-export it with this version"
    if _entry(name) is None:
        return (f"no installed package provides the reference loader {name!r} (entry point group {GROUP}): "
                "install the model's package to run the reference")
    return ""


def problem(requirements: dict, profile) -> str:
    return torch_problem(profile.libraries) or _loader_problem(requirements.get("loader", ""))


def is_available() -> tuple[bool, str]:
    return availability(lambda requirements, p: torch_problem(p.libraries),
                        lambda p: "PyTorch, with the model's own package")


def loader(name: str):
    """The installed reference loader registered under `name`."""
    why = _loader_problem(name)
    if why:
        raise BackendUnavailable(why)
    return _entry(name).load()


def load(path: Path, requirements: dict, profile, threads: int | None = None):
    """requirements["method"], when given, names one of the model's further entry points: the reference
    module provides it as `entry_point(name)`."""
    model = loader(requirements.get("loader", ""))(Path(path)).eval()
    method = requirements.get("method")
    if method:
        if not hasattr(model, "entry_point"):
            raise BackendUnavailable(f"the reference model has no entry_point(name), so its method {method!r} "
                                     "cannot run eagerly")
        model = model.entry_point(method).eval()
    return torch_runner(model, copy=True, threads=threads)
