"""Backend `eager`: the reference model, rebuilt from the weights the bundle carries (last resort).

The manifest names the function that rebuilds it by an entry-point name (`model.reference_loader`), which
installed packages register in the group `neat_deploy.reference_loaders` (NEAT registers `neat`). It is
resolved only when this backend is loaded, so `runtimes` itself imports no model code, and a manifest can
only name a loader some installed package declares, never an arbitrary function.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.errors import BackendUnavailable

GROUP = "neat_deploy.reference_loaders"


def loader(name: str):
    """The installed reference loader registered under `name`."""
    from importlib.metadata import entry_points

    if not name:
        raise BackendUnavailable("the bundle names no reference loader: re-export it with this version")
    found = entry_points(group=GROUP, name=name)
    if not found:
        raise BackendUnavailable(f"no installed package provides the reference loader {name!r} (entry point "
                                 f"group {GROUP}): install the model's package to run the reference")
    return next(iter(found)).load()


def load(weights: Path, name: str):
    import torch

    model = loader(name)(weights).eval()

    @torch.no_grad()
    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        outs = model(*[torch.from_numpy(np.array(a, copy=True)) for a in arrays])
        return [t.numpy() for t in torch.utils._pytree.tree_leaves(outs)]

    return run
