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

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        # a decode step calls this once per token with ~30 state arrays: no per-array work beyond the
        # conversions (no .to/.detach/.cpu on the CPU, no pytree walk over a flat list of outputs)
        if threads and torch.get_num_threads() != threads:
            torch_threads(threads)
        with no_grad():
            tensors = [torch.from_numpy(np.array(a, copy=True) if copy else contiguous(a)) for a in arrays]
            outs = fn(*(tensors if on_cpu else [t.to(device) for t in tensors]))
        if not (isinstance(outs, (list, tuple)) and all(type(o) is torch.Tensor for o in outs)):
            outs = leaves(outs)
        return [o.numpy() if on_cpu and not o.requires_grad else o.detach().cpu().numpy() for o in outs]

    def native(*arrays) -> list:
        """`run` for a decode loop: torch tensors (or numpy arrays) in, torch tensors out, so a step state
        stays in torch (on `device`) from one call to the next; `host` turns an output into numpy."""
        if threads and torch.get_num_threads() != threads:
            torch_threads(threads)
        with no_grad():
            tensors = [a if type(a) is torch.Tensor else torch.from_numpy(contiguous(a)) for a in arrays]
            if copy:
                tensors = [t.clone() for t in tensors]
            outs = fn(*(tensors if on_cpu else [t.to(device) for t in tensors]))
        return list(outs) if isinstance(outs, (list, tuple)) and all(type(o) is torch.Tensor for o in outs) \
            else leaves(outs)

    run.native, run.host = native, host
    return run


def host(a) -> np.ndarray:
    """A torch tensor (any device) or array as a numpy array."""
    if isinstance(a, np.ndarray):
        return a
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def contiguous(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array of the same shape (np.ascontiguousarray makes a 0-d array 1-d)."""
    if isinstance(a, np.ndarray) and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a).reshape(np.shape(a))
