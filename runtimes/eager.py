"""Backend `eager`: the PyTorch reference model, rebuilt from the weights the bundle carries (last resort)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load(weights: Path):
    import torch

    from neat.checkpoint import load_checkpoint  # the model code is needed only for this backend

    model = load_checkpoint(weights).eval()

    @torch.no_grad()
    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return [t.numpy() for t in model(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])]

    return run
