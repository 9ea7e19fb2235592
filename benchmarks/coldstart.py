"""Cold start: a fresh Python process, from its start to the first result, and that process's peak memory.

`artifact(bundle, key)` opens the bundle the way an application would (`runtimes.load`) and runs one chunk.
`torch_compile(bundle)` is what the artifacts replace: the reference model rebuilt from the bundle's weights,
wrapped in `torch.compile` and called once. Its compile cache starts empty (a fresh machine, container or CI
job) unless `cache_dir` is given: measured a second time with the same directory, it is a warm restart.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

PEAK = """
def _peak_bytes():
    # VmHWM: this process's own peak. ru_maxrss is not: on Linux it keeps the parent's peak across fork+exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource, sys
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024
print(_peak_bytes())
"""

ARTIFACT = """
import sys
import numpy as np, runtimes
s = runtimes.load(sys.argv[1], backend=sys.argv[2])
T = s.manifest.signature["inputs"][0]["shape"][1]
s.run(np.zeros((1, T), np.int32), s.new_state(1))
""" + PEAK

TORCH_COMPILE = """
import sys
from pathlib import Path
import torch
from neat.checkpoint import load_checkpoint
from runtimes.bundle import read_init_state, read_manifest, reference_path
bundle = Path(sys.argv[1])
manifest = read_manifest(bundle)
model = torch.compile(load_checkpoint(reference_path(bundle, manifest)).eval())
T = manifest.signature["inputs"][0]["shape"][1]
with torch.no_grad():
    model(torch.zeros((1, T), dtype=torch.int32), *[torch.from_numpy(s) for s in read_init_state(bundle, manifest)])
""" + PEAK


def _measure(script: str, args: list[str], env: dict | None = None) -> tuple[float | None, float | None, str]:
    """(seconds from process start to first result, peak RSS in MiB, error text when it failed)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        return None, None, (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
    return wall, int(res.stdout.split()[-1]) / 2**20, ""


def artifact(bundle: Path, key: str) -> tuple[float | None, float | None]:
    wall, peak, _ = _measure(ARTIFACT, [str(bundle), key])
    return wall, peak


def torch_compile(bundle: Path, cache_dir: Path, warm: bool = True) -> dict:
    """torch.compile's first call in a fresh process: with `cache_dir` empty, then (warm) again with it warm."""
    env = {"TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}
    cold, peak, error = _measure(TORCH_COMPILE, [str(bundle)], env)
    warm_s = _measure(TORCH_COMPILE, [str(bundle)], env)[0] if cold is not None and warm else None
    return {"first_call_s": cold, "warm_cache_first_call_s": warm_s, "peak_rss_mib": peak, "error": error or None}
