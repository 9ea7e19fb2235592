"""How many threads a session computes with: one policy for every backend.

Why a policy at all: a NEAT chunk is a few milliseconds of work and a decode step a fraction of one, too
little to split well across threads, and threads that spin at a barrier for a core another process holds
make it far worse. Measured on these 2 cores with a test suite running beside it (load average 3): the
AOTInductor artifact's chunk forward took 7.3 ms on one thread and 41 ms (p99 432 ms) on two; generation
dropped from 261 to 60 bytes/s (benchmarks/NOTES.md, "Busy machines"). So:

- a decode step (batch 1) runs on one thread, always;
- a chunk forward uses a quarter of the cores this process may use, 1 to 4 (1 on up to 7 cores), leaving
  the rest to the machine it shares;
- `threads=` on `runtimes.load` (`--threads` on the CLI) sets both, and so does OMP_NUM_THREADS when the
  user set it: an explicit choice always wins.

The cores this process may use are its CPU affinity (`os.sched_getaffinity`) capped by the cgroup CPU quota
(containers: `cpu.max`, or cgroup v1's `cpu.cfs_quota_us`), not the machine's core count.

How each backend applies it: ONNX Runtime per session (intra-op threads in its session options; nothing
global changes); PyTorch (AOTInductor, ExportedProgram, eager) has one intra-op thread count per process, so
a torch session sets `torch.set_num_threads` before a call when it differs: an app that embeds a torch
session and uses torch itself shares that setting.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from runtimes.errors import InputError

MAX_CHUNK_THREADS = 4
CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


@dataclass(frozen=True)
class Threads:
    chunk: int   # intra-op threads for a chunk forward (prompts, batches)
    step: int    # intra-op threads for a decode step (one byte, batch 1)
    why: str     # where the figures come from, in words

    def for_method(self, method: str | None) -> int:
        """The thread count for an entry point: the chunk forward (None, "forward") or a decode method."""
        return self.chunk if method in (None, "forward") else self.step


def cgroup_quota() -> float | None:
    """The CPU quota of this process's cgroup in cores (None: no quota, or not Linux)."""
    try:
        if CGROUP_V2.is_file():
            quota, period = CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota, period = (int(p.read_text()) for p in CGROUP_V1)
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores() -> tuple[int, str]:
    """(cores this process may use, how that was found)."""
    try:
        affinity = len(os.sched_getaffinity(0))
        where = f"affinity {affinity}"
    except (AttributeError, OSError):  # macOS, Windows
        affinity = os.cpu_count() or 1
        where = f"{affinity} CPUs"
    quota = cgroup_quota()
    if quota is None:
        return affinity, where
    return max(1, min(affinity, math.ceil(quota))), f"{where}, cgroup quota {quota:g}"


def _whole(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise InputError(f"{what} must be a whole number of threads from 1 to 1024, got {value!r}")
    return value


def plan(threads: int | None = None) -> Threads:
    """The thread counts a session uses: `threads` when given, else OMP_NUM_THREADS when set, else the
    policy above from the cores this process may use."""
    if threads is not None:
        n = _whole(threads, "threads")
        return Threads(n, n, f"threads={n}")
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # "4,2": nested levels, the outer one
    if omp:
        try:
            n = _whole(int(omp), "OMP_NUM_THREADS")
        except ValueError:
            raise InputError(f"OMP_NUM_THREADS must be a whole number, got {omp!r}: unset it or fix it") from None
        return Threads(n, n, f"OMP_NUM_THREADS={n}")
    cores, where = usable_cores()
    chunk = max(1, min(MAX_CHUNK_THREADS, cores // 4))
    return Threads(chunk, 1, f"policy: {cores} usable cores ({where})")


def torch_threads(n: int) -> None:
    """Set torch's per-process intra-op thread count to `n` when it differs (a no-op otherwise)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
