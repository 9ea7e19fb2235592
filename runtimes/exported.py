"""Backend `exported`: the ExportedProgram (.pt2) run by PyTorch (optionally under torch.compile)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

NAME = "exported"
FILE = "model.pt2"


def is_available() -> tuple[bool, str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False, "PyTorch is not installed: pip install torch"
    return True, "PyTorch"


def load(artifact_dir: Path, compile: bool = False):
    import torch

    module = torch.export.load(str(artifact_dir / FILE)).module()
    if compile:
        module = torch.compile(module)

    @torch.no_grad()
    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        outs = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return [o.numpy() for o in outs]

    return run
