"""Latency, measured the way an application would see it: each artifact alone in its own process.

Several runtimes in one process disturb each other's timings: ONNX Runtime's threads spin between calls
and take the cores that the OpenMP threads of PyTorch and AOTInductor want, so whichever ran just before
changes the result (measured here: cpu-fp32 2.9 ms alone, up to 4.9 ms beside an ONNX Runtime session).
So every artifact gets a worker process (`python -m benchmarks.timing BUNDLE KEY`, JSON lines on its stdin
and stdout: nothing of the caller's program is re-imported), and the workers take turns in rounds: only one
runs at a time while the others wait blocked on their pipe, and a noisy neighbour or a clock change during
the run slows every artifact alike, so the ratios between them stay comparable.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

ROUNDS = 10
TAG = "neat-timing "  # marks the protocol's lines on the worker's stdout


class Workers:
    """One process per artifact key, each with the bundle loaded; `latencies` takes turns across them.
    A key may name a thread count, "cpu-fp32@2": that worker loads with threads=2 (runtimes.threads);
    without one it runs with the default thread policy, as runtimes.load does. The key "torch.compile" is the
    eager reference under torch.compile (benchmarks.compiled), not an artifact."""

    def __init__(self, bundle: Path, keys: list[str]):
        self.procs: dict[str, subprocess.Popen] = {}
        self.errors: dict[str, IO[str]] = {}
        self.load_s: dict[str, float] = {}
        try:
            for key in keys:
                self.errors[key] = tempfile.TemporaryFile(mode="w+")
                self.procs[key] = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.timing", str(bundle), key], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=self.errors[key], text=True, bufsize=1)
                self.load_s[key] = self._reply(key)  # one at a time: loading does not overlap a measurement
        except BaseException:
            self.close()
            raise

    def _reply(self, key: str):
        """The worker's next answer; lines a library printed to stdout on its own are skipped."""
        proc = self.procs[key]
        for line in proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        code = proc.wait()
        self.errors[key].seek(0)
        last = (self.errors[key].read().strip().splitlines() or ["no error output"])[-1]
        raise RuntimeError(f"the benchmark worker for {key} failed (exit code {code}): {last}")

    def latencies(self, batch: int, runs: int, warmup: int) -> dict[str, list[float]]:
        """Seconds per chunk at this batch for every artifact: `warmup` untimed calls each, then `runs`
        timed calls split over ROUNDS in which every artifact takes its turn (one untimed call first)."""
        rounds = max(1, min(ROUNDS, runs))
        out: dict[str, list[float]] = {key: [] for key in self.procs}
        jobs = [[batch, 0, warmup]] + [[batch, -(-runs // rounds), 1]] * rounds
        for job in jobs:
            for key, proc in self.procs.items():
                proc.stdin.write(json.dumps(job) + "\n")
                out[key] += self._reply(key)
        return out

    def generation(self, prompt: list[int], n: int, paths: tuple[str, ...] | None = None,
                   follow: list[int] | None = None) -> dict[str, dict]:
        """n bytes after `prompt` (greedy, or stepping through `follow`: benchmarks.generation.timed) by each
        path (benchmarks.generation.PATHS) in every worker, taking turns: {key: {path: timed run, or
        {'skipped': why}}}, on each session's own thread counts (runtimes.threads: one thread per decode step
        unless the key names a count)."""
        from benchmarks.generation import PATHS

        out: dict[str, dict] = {key: {} for key in self.procs}
        for path in paths or PATHS:
            for key, proc in self.procs.items():
                proc.stdin.write(json.dumps({"generate": n, "path": path, "prompt": prompt, "follow": follow}) + "\n")
                out[key][path] = self._reply(key)
        return out

    def close(self) -> None:
        for proc in self.procs.values():
            try:
                proc.stdin.close()  # end of input: the worker exits
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            proc.stdout.close()
        for f in self.errors.values():
            f.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _generate(session, job: dict) -> dict:
    """One generation job: {'generate': n, 'path', 'prompt', 'follow'} -> benchmarks.generation.timed's run (the session
    sets its own thread counts per call: runtimes.threads)."""
    from benchmarks import compiled
    from benchmarks.generation import timed

    if job["path"] == "step" and session.decoding != "step":
        return {"skipped": f"{session.backend.key} carries no decode methods (it recomputes)"}
    if session.backend.key == compiled.LABEL:  # its steady state: a first, untimed run compiles every entry
        timed(session, job["path"], job["prompt"], job["generate"], job.get("follow"))  # point and prompt shape
    return timed(session, job["path"], job["prompt"], job["generate"], job.get("follow"))  # the run meets


def _serve(bundle: str, key: str) -> None:
    """The worker: load, say how long it took, then answer [batch, runs, warmup] lines with latencies and
    generation jobs (dicts, `_generate`) with their timed runs."""
    from benchmarks import compiled
    from runtimes.profile import detect
    from runtimes.pick import load

    detect()  # the hardware detection is not part of loading the artifact
    t0 = time.perf_counter()
    key, _, threads = key.partition("@")
    n = int(threads) if threads else None
    session = compiled.session(bundle, n) if key == compiled.LABEL else load(bundle, backend=key, threads=n)
    print(TAG + json.dumps(time.perf_counter() - t0), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        if isinstance(job, dict):
            print(TAG + json.dumps(_generate(session, job)), flush=True)
            continue
        batch, runs, warmup = job
        print(TAG + json.dumps(session.latencies(batch, runs, warmup)), flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
