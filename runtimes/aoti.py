"""Backends `cpu` and `cuda`: an AOTInductor package (.pt2) compiled ahead of time for one device type.

Loaded with PyTorch's C++ package loader directly: `torch._inductor.aoti_load_package` would first import
Inductor and Dynamo and probe the CPU's vector ISA by compiling test programs (~2.5 s of a 3 s cold start
here). The probe only guards against a package built for CPU features this machine lacks, and the
selection layer already refuses that from the manifest (`cpu_isa`) before anything is loaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "model.pt2"


def is_available(device: str = "cpu") -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "PyTorch is not installed: pip install torch"
    if not hasattr(torch._C, "_aoti"):
        return False, f"this PyTorch build ({torch.__version__}) has no AOTInductor runtime"
    if device == "cuda" and not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch"
    return True, f"AOTInductor (torch {torch.__version__})"


def load(artifact_dir: Path, device: str = "cpu"):
    import torch

    try:  # (path, model name in the package, run single-threaded, runners, device index: -1 = the current one)
        loader = torch._C._aoti.AOTIModelPackageLoader(str(artifact_dir / FILE), "model", False, 1, -1)
    except TypeError:  # a torch whose loader takes other arguments: its own (slower) entry point
        loader = torch._inductor.aoti_load_package(str(artifact_dir / FILE)).loader

    @torch.no_grad()
    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        # inputs and outputs are flat tuples of tensors, so the package's call spec is the identity
        outs = loader.boxed_run([torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays])
        return [o.cpu().numpy() for o in outs]

    return run
