"""A busy machine on demand: bounded background processes for `neat bench --load PROFILE`.

Profiles (what else runs beside the measured app):
- `workers`: as many other processes of the same app as this process may use cores, each with the bundle
  open through `runtimes.load` (its default pick and thread policy) running chunk forwards back to back: a
  server with several workers.
- `mixed`: the issue's profile, "the smallest mix that reproduces the collapse" first seen beside a compile, a
  PyTorch job and a NumPy job: one Inductor compile (torch.compile of a fresh function, again and again, with
  gcc) is enough. On these 2 cores it took the AOTInductor artifact on two threads from 1,333 to 192 bytes/s
  (chunk p99 4.4 -> 250 ms), while on one thread it kept 1,355.
- `crowded`: the compile and a NumPy job on OpenBLAS's own threads (matrix products): about one busy process per
  core of a 2-core machine (two threads: 126 bytes/s, p99 825 ms; one thread: 640 of 1,287 idle), so one
  thread's fair share is about half a core.
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
import select
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
_deadline, _parent, _calls = time.time() + float(sys.argv[1]), os.getppid(), [0]
def running():
    _calls[0] += 1
    if _calls[0] == 2:  # one iteration done: imports, loading and first compiles are behind it
        print("ready", flush=True)
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
MIXES = {"mixed": ["compile"], "crowded": ["compile", "numpy_blas"], "heavy": ["compile", "torch_threads", "numpy_blas"]}
PROFILES = {
    "workers": "other processes of the same app (runtimes.load's default pick), one per usable core, running "
               "chunk forwards",
    "mixed": "an Inductor compile (torch.compile + gcc, repeated): the smallest mix that reproduces the collapse",
    "crowded": "an Inductor compile and a NumPy (OpenBLAS, multi-threaded) job",
    "heavy": "an Inductor compile, a NumPy (OpenBLAS) job and a PyTorch job on every core",
}


def jobs(profile: str, cores: int) -> list[str]:
    if profile not in PROFILES:
        raise LoadUnavailable(f"unknown load profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return ["app"] * max(1, cores) if profile == "workers" else list(MIXES[profile])


@contextlib.contextmanager
def busy(profile: str, bundle: Path, cores: int, seconds: float = 1800.0, ramp_s: float = 2.0,
         ready_timeout_s: float = 180.0):
    """Run the profile's jobs in the background while the block runs; yields their names once every job has
    done one iteration (its imports, loading and first compile are behind it: starting up costs more than
    the steady state, so measuring earlier would measure the start-up), then `ramp_s` more."""
    names = jobs(profile, cores)
    procs = []
    cache = tempfile.TemporaryDirectory(prefix="neat-busy-")  # the compile job's own Inductor cache
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache.name}
    try:
        for name in names:
            procs.append(subprocess.Popen([sys.executable, "-c", JOBS[name], str(seconds), str(bundle)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        _wait_ready(profile, names, procs, ready_timeout_s)
        time.sleep(ramp_s)
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


def _wait_ready(profile: str, names: list[str], procs: list, timeout_s: float) -> None:
    """Block until every job said "ready" (after its first iteration); a job that exits first is an error."""
    waiting, deadline = dict(zip(procs, names)), time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        readable, _, _ = select.select([p.stdout for p in waiting], [], [], 1.0)
        for p in [p for p in waiting if p.stdout in readable]:
            if p.stdout.readline().strip() == "ready":
                del waiting[p]
        dead = [n for p, n in waiting.items() if p.poll() is not None]
        if dead:
            raise LoadUnavailable(f"load job(s) {', '.join(dead)} exited before their first iteration ended: the "
                                  f"load profile {profile!r} cannot run here (try another profile)")
    # a job still starting after the timeout (a very slow machine) is left to go on: the load is on regardless


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
