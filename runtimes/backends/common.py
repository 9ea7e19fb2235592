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

    leaves = torch.utils._pytree.tree_leaves
    on_cpu = torch.device(device).type == "cpu"
    no_grad = torch.no_grad

    def native(*arrays) -> list:
        """torch tensors (or numpy arrays) in, torch tensors out: a decode loop's step state stays in torch
        (on `device`) from one call to the next; `host` turns an output into numpy. A decode step calls this
        once per token with ~30 state arrays: no per-array work beyond the conversions."""
        if threads and torch.get_num_threads() != threads:
            torch_threads(threads)
        with no_grad():
            tensors = [(a.clone() if copy else a) if type(a) is torch.Tensor else
                       torch.from_numpy(np.array(a, copy=True) if copy else contiguous(a)) for a in arrays]
            outs = fn(*(tensors if on_cpu else [t.to(device) for t in tensors]))
        return list(outs) if isinstance(outs, (list, tuple)) and all(type(o) is torch.Tensor for o in outs) \
            else leaves(outs)

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return [host(o) for o in native(*arrays)]

    run.native, run.host = native, host
    return run


def host(a) -> np.ndarray:
    """A torch tensor (any device) or array as a numpy array (a CPU tensor's own memory, no copy)."""
    if isinstance(a, np.ndarray):
        return a
    if not hasattr(a, "detach"):
        return np.asarray(a)
    return a.numpy() if a.device.type == "cpu" and not a.requires_grad else a.detach().cpu().numpy()


def contiguous(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array of the same shape (np.ascontiguousarray makes a 0-d array 1-d)."""
    if isinstance(a, np.ndarray) and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a).reshape(np.shape(a))
