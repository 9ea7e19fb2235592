"""What several backends share: the availability answer, and running a torch callable on numpy arrays."""
from __future__ import annotations

from typing import Callable

import numpy as np


def availability(problem: Callable, found: Callable) -> tuple[bool, str]:
    """A backend's is_available(): its `problem({}, profile)` on this machine, or, when there is none, what
    was found (`found(profile)`)."""
    from runtimes.profile import detect

    profile = detect()
    why = problem({}, profile)
    return (False, why) if why else (True, found(profile))


def torch_problem(libraries: dict) -> str:
    return "" if "torch" in libraries else "PyTorch is not installed: pip install torch"


def torch_runner(fn: Callable, device: str = "cpu", copy: bool = False, threads: int | None = None) -> Callable:
    """numpy arrays in -> `fn` on torch tensors (on `device`) -> numpy arrays out, flattened in order.
    copy=True gives `fn` its own copy of every input (for code that may write into its inputs). threads:
    torch's per-process intra-op thread count for the call (runtimes.threads; None leaves it as it is)."""
    import torch

    from runtimes.threads import torch_threads

    @torch.no_grad()
    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        if threads:
            torch_threads(threads)
        tensors = [torch.from_numpy(np.array(a, copy=True) if copy else contiguous(a)).to(device)
                   for a in arrays]
        return [t.detach().cpu().numpy() for t in torch.utils._pytree.tree_leaves(fn(*tensors))]

    return run


def contiguous(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array of the same shape (np.ascontiguousarray makes a 0-d array 1-d)."""
    return np.ascontiguousarray(a).reshape(np.shape(a))
