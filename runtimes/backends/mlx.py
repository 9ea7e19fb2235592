"""Backend `mlx`: an `.mlxfn` program (exporters.mlx) through `mx.import_function`; Apple silicon's GPU on a
Mac, the CPU elsewhere (`mlx[cpu]`). One trace per batch size lives in the file; MLX picks the one matching
the inputs' shapes. MLX's export format is experimental: a program runs on the MLX minor version that wrote it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.backends.common import availability, contiguous

NAME = "mlx"
FILE = "model.mlxfn"


def _series(version: str) -> str:
    return ".".join(str(version).split(".")[:2])


def problem(requirements: dict, profile) -> str:
    have = profile.libraries.get("mlx")
    if not have:
        return 'mlx is not installed: pip install "neat-deploy[mlx]" (mlx[cpu] on Linux)'
    built = requirements.get("mlx")
    if built and _series(built) != _series(have):
        return (f"this MLX program was written by mlx {built}, and mlx {have} is installed (MLX's export format "
                f"is experimental): install mlx=={_series(built)}.* or rebuild with `neat export mlx`")
    return ""


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"mlx {p.libraries['mlx']}")


def load(path: Path, requirements: dict, profile, threads: int | None = None):
    """threads: MLX has no per-call thread setting; it is accepted and left to MLX."""
    import mlx.core as mx

    program = mx.import_function(str(Path(path) / FILE))

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        outs = program(*[mx.array(contiguous(a)) for a in arrays])
        return [np.array(o) for o in outs]

    run.program = program
    return run
