"""A busy machine on demand: bounded background processes for `neat bench --load PROFILE`.

Profiles (what else runs beside the measured app):
- `workers`: as many other processes of the same app as this process may use cores, each with the bundle
  open through `runtimes.load` (its default pick and thread policy) running chunk forwards back to back: a
  server with several workers.
- `compile`: one Inductor compile (torch.compile of a fresh function, again and again, with gcc): the smallest
  mix found that reproduces the collapse of issue 33. On these 2 cores it took the AOTInductor artifact on two
  threads from 1,333 to 192 bytes/s (chunk p99 4.4 -> 250 ms), while on one thread it kept 1,355.
- `mixed`: the compile and a NumPy job on OpenBLAS's own threads (matrix products): about one busy process per
  core of a 2-core machine (two threads: 126 bytes/s, p99 825 ms; one thread: 640 of 1,287 idle).
- `heavy`: what the collapse was first seen beside: the compile, the NumPy job and a PyTorch job with a thread
  per core. Here no thread setting keeps half its idle speed: one thread's fair share of 2 cores shared with
  five busy threads is a third of a core.

Every job stops by itself: at its deadline, or as soon as the process that started it is gone (it checks
its parent between iterations), so an interrupted benchmark leaves nothing running. `busy()` also stops
them on exit.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neat.errors import NeatError


class LoadUnavailable(NeatError):
    """A load profile's jobs cannot run on this machine (the message names them and what to try)."""

GUARD = """
import os, sys, time
_deadline, _parent = time.time() + float(sys.argv[1]), os.getppid()
def running():
    return time.time() < _deadline and os.getppid() == _parent
"""

JOBS = {
    "app": GUARD + """
import numpy as np, runtimes
s = runtimes.load(sys.argv[2])
T = s.manifest.signature["inputs"][0]["shape"][1]
tokens, state = np.random.default_rng(0).integers(0, 256, (1, T)).astype(np.int32), s.new_state(1)
while running():
    _, state = s.run(tokens, state)
""",
    "compile": GUARD + """
import torch
i = 0
while running():
    torch._dynamo.reset()
    k = i % 7 + 2  # a new function each time (constants differ): every iteration compiles and runs gcc
    f = torch.compile(lambda x, k=k: (torch.sin(x) * k + torch.cos(x * k)).softmax(-1).cumsum(-1))
    f(torch.randn(64, 257))
    i += 1
""",
    "torch_threads": GUARD + """
import torch
torch.set_num_threads(os.cpu_count() or 1)
a = torch.randn(384, 384)
while running():
    for _ in range(20):
        a = torch.tanh(a @ a)
""",
    "numpy_blas": GUARD + """
import numpy as np
a = np.random.default_rng(0).standard_normal((512, 512))
while running():
    for _ in range(10):
        a = np.tanh(a @ a)
""",
}
MIXES = {"compile": ["compile"], "mixed": ["compile", "numpy_blas"], "heavy": ["compile", "torch_threads", "numpy_blas"]}
PROFILES = {
    "workers": "other processes of the same app (runtimes.load's default pick), one per usable core, running "
               "chunk forwards",
    "compile": "an Inductor compile (torch.compile + gcc, repeated)",
    "mixed": "an Inductor compile and a NumPy (OpenBLAS, multi-threaded) job",
    "heavy": "an Inductor compile, a NumPy (OpenBLAS) job and a PyTorch job on every core",
}


def jobs(profile: str, cores: int) -> list[str]:
    if profile not in PROFILES:
        raise LoadUnavailable(f"unknown load profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return ["app"] * max(1, cores) if profile == "workers" else list(MIXES[profile])


@contextlib.contextmanager
def busy(profile: str, bundle: Path, cores: int, seconds: float = 1800.0, ramp_s: float = 5.0):
    """Run the profile's jobs in the background while the block runs; yields their names."""
    names = jobs(profile, cores)
    procs = []
    cache = tempfile.TemporaryDirectory(prefix="neat-busy-")  # the compile job's own Inductor cache
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache.name}
    try:
        for name in names:
            procs.append(subprocess.Popen([sys.executable, "-c", JOBS[name], str(seconds), str(bundle)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(ramp_s)  # imports and the first compile: the load is on before anything is measured
        dead = [n for n, p in zip(names, procs) if p.poll() is not None]
        if dead:
            raise LoadUnavailable(f"load job(s) {', '.join(dead)} exited at once: the load profile {profile!r} "
                               "cannot run here (try the other profile)")
        yield names
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        cache.cleanup()


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
