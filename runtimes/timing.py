"""Latency, measured the way an application would see it: each artifact alone in its own process.

Several runtimes in one process disturb each other's timings: ONNX Runtime's threads spin between calls
and take the cores that the OpenMP threads of PyTorch and AOTInductor want, so whichever ran just before
changes the result (measured here: cpu-fp32 2.9 ms alone, up to 4.9 ms beside an ONNX Runtime session).
So every artifact gets a worker process, and the workers take turns in rounds: only one runs at a time, the
others wait blocked on their pipe, and a noisy neighbour or a clock change during the run slows every
artifact alike, so the ratios between them stay comparable.
"""
from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

ROUNDS = 5


def _worker(conn, bundle: str, key: str) -> None:
    try:
        from runtimes.session import load

        t0 = time.perf_counter()
        session = load(bundle, backend=key)
        conn.send(("ready", time.perf_counter() - t0))
        while (job := conn.recv()) is not None:
            batch, runs, warmup = job
            conn.send(("ok", session.latencies(batch, runs, warmup)))
    except Exception as exc:  # reported to the parent, which raises it there
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class Workers:
    """One process per artifact key, each with the bundle loaded; `latencies` takes turns across them."""

    def __init__(self, bundle: Path, keys: list[str]):
        ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no threads or state inherited
        self.procs, self.conns, self.load_s = {}, {}, {}
        try:
            for key in keys:
                parent, child = ctx.Pipe()
                self.procs[key] = ctx.Process(target=_worker, args=(child, str(bundle), key), daemon=True)
                self.procs[key].start()
                child.close()
                self.conns[key] = parent
                self.load_s[key] = self._reply(key)  # one at a time: loading does not overlap a measurement
        except BaseException:
            self.close()
            raise

    def _reply(self, key: str):
        try:
            status, value = self.conns[key].recv()
        except EOFError:
            raise RuntimeError(f"the benchmark worker for {key} exited unexpectedly") from None
        if status == "error":
            raise RuntimeError(f"the benchmark worker for {key} failed: {value}")
        return value

    def latencies(self, batch: int, runs: int, warmup: int) -> dict[str, list[float]]:
        """Seconds per chunk at this batch for every artifact: `warmup` untimed calls each, then `runs`
        timed calls split over ROUNDS in which every artifact takes its turn (one untimed call first)."""
        rounds = max(1, min(ROUNDS, runs))
        out: dict[str, list[float]] = {key: [] for key in self.conns}
        jobs = [(batch, 0, warmup)] + [(batch, -(-runs // rounds), 1)] * rounds
        for job in jobs:
            for key, conn in self.conns.items():
                conn.send(job)
                out[key] += self._reply(key)
        return out

    def close(self) -> None:
        for key, conn in self.conns.items():
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            conn.close()
        for proc in self.procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
