"""Backends `cpu` and `cuda`: an AOTInductor package (.pt2) compiled ahead of time for one device type."""
from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "model.pt2"


def is_available(device: str = "cpu") -> tuple[bool, str]:
    try:
        import torch
        import torch._inductor  # noqa: F401
    except ImportError:
        return False, "PyTorch with Inductor is not installed: pip install torch"
    if device == "cuda" and not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch"
    return True, f"AOTInductor (torch {torch.__version__})"


def load(artifact_dir: Path, device: str = "cpu"):
    import torch

    runner = torch._inductor.aoti_load_package(str(artifact_dir / FILE))

    @torch.no_grad()
    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        outs = runner(*[torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays])
        return [o.cpu().numpy() for o in outs]

    return run
