"""Bounded load on `neat serve` (runtimes.serve), loopback: for 1, 2 and 4 replicas, N clients each send M
/stream requests one after another (stopping by itself), and the run reports requests/s, bytes/s and the
p50/p99 latency of a whole request, plus the time to the first byte.

    python -m benchmarks.serve BUNDLE [--clients 8] [--requests 4] [--max-new-bytes 64] [--replicas 1,2,4]
                                      [--out benchmarks/results/serve.json]

One local Ray instance for the run, given a CPU per replica (on a machine with fewer cores the replicas share
them: say so when reading the figures); every replica on one thread. Every answer is checked against
Session.generate run in this process (greedy), so a fast wrong answer cannot count.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

PROMPTS = [b"def main():\n    ", b"The ", b"import numpy as np\n", b"Once upon a time", b"class Config:\n",
           b"# Notes\n\n", b"for i in range(", b"It was the best of "]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stream(port: int, prompt: bytes, n: int) -> tuple[float, float, bytes]:
    """(seconds to the first byte, seconds in all, the body) of one /stream request."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/stream", json.dumps({"prompt": prompt.decode(), "max_new_bytes": n}))
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    parts, first = [], None
    while piece := r.read1(65536):
        first = first if first is not None else time.perf_counter() - t0
        parts.append(piece)
    conn.close()
    return first or 0.0, time.perf_counter() - t0, b"".join(parts)


def run_load(port: int, clients: int, requests: int, n: int, expected: dict[bytes, bytes]) -> dict:
    def client(c: int) -> list[tuple[float, float, int]]:
        out = []
        for k in range(requests):
            prompt = PROMPTS[(c + k) % len(PROMPTS)]
            first, total, body = _stream(port, prompt, n)
            if body != expected[prompt]:
                raise RuntimeError(f"the answer to {prompt!r} differs from Session.generate's")
            out.append((first, total, len(body)))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        rows = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - t0
    first, total = np.array([r[0] for r in rows]) * 1e3, np.array([r[1] for r in rows]) * 1e3
    return {"requests": len(rows), "seconds": round(wall, 3), "requests_per_s": round(len(rows) / wall, 2),
            "bytes_per_s": round(sum(r[2] for r in rows) / wall, 1),
            "latency_p50_ms": round(float(np.percentile(total, 50)), 1),
            "latency_p99_ms": round(float(np.percentile(total, 99)), 1),
            "first_byte_p50_ms": round(float(np.percentile(first, 50)), 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4, help="requests per client, one after another")
    ap.add_argument("--max-new-bytes", type=int, default=64)
    ap.add_argument("--replicas", default="1,2,4")
    ap.add_argument("--max-concurrent", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    import runtimes
    from runtimes.serve import ServeSettings, application, init_ray

    counts = [int(x) for x in args.replicas.split(",")]
    session = runtimes.load(args.bundle, threads=1)
    expected = {p: session.generate(p, args.max_new_bytes) for p in PROMPTS}
    port = _free_port()
    t0 = time.perf_counter()
    init_ray(num_cpus=max(counts))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    started = time.perf_counter() - t0
    results = []
    try:
        for r in counts:
            settings = ServeSettings(replicas=r, threads=1, max_concurrent=args.max_concurrent, port=port)
            t1 = time.perf_counter()
            serve.run(application(args.bundle, settings), name="neat", route_prefix="/")
            deploy = time.perf_counter() - t1
            run_load(port, 2, 1, args.max_new_bytes, expected)  # warm-up: every replica's first calls
            row = {"replicas": r, "deploy_s": round(deploy, 1),
                   **run_load(port, args.clients, args.requests, args.max_new_bytes, expected)}
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        ray.shutdown()
    record = {"bundle": str(args.bundle), "artifact": session.backend.key, "clients": args.clients,
              "requests_per_client": args.requests, "max_new_bytes": args.max_new_bytes,
              "max_concurrent": args.max_concurrent, "ray_start_s": round(started, 1),
              "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                          "platform": platform.platform()},
              "results": results}
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
