"""Bounded load on `neat serve` (runtimes.serve), loopback: for 1, 2 and 4 replicas, N clients each send M
/stream requests one after another (stopping by itself), and the run reports requests/s, bytes/s and the
p50/p99 latency of a whole request, plus the time to the first byte.

    python -m benchmarks.serve BUNDLE [--clients 8] [--requests 4] [--max-new-bytes 64] [--replicas 1,2,4]
                                      [--out benchmarks/results/serve.json]
    python -m benchmarks.serve BUNDLE --chunk [--clients 8] [--requests 8] [--replicas 1] [--batch-wait-ms 5]
                                      [--out benchmarks/results/serve_chunk.json]

--chunk measures /chunk instead, with batching of concurrent requests off (--max-batch 1) and on (the
artifact's batch max), in the same run on the same Ray instance: each client sends M chunks of one
conversation in turn (its state through the client, .npy both ways), every answer checked against
Session.run one by one in this process (the same argmax, and close to float rounding: a batched forward
may round differently; the largest difference is recorded), and the run reports requests/s, p50/p99
latency and the mean rows per forward.

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


def _chunk(port: int, tokens: np.ndarray, state) -> tuple[float, np.ndarray, list, int]:
    """(seconds, logits, state as sent back, rows of the forward) of one /chunk request, .npy both ways."""
    import base64
    import io

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a)
        return {"npy": base64.b64encode(buf.getvalue()).decode()}

    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/chunk", json.dumps({"tokens": npy(tokens), "state": state, "format": "npy"}))
    r = conn.getresponse()
    raw = r.read()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {raw[:200]!r}")
    answer = json.loads(raw)
    seconds = time.perf_counter() - t0
    logits = np.load(io.BytesIO(base64.b64decode(answer["logits"]["npy"])))
    return seconds, logits, answer["state"], int(r.getheader("X-Neat-Batch"))


def run_chunk_load(port: int, chunks: list[list[np.ndarray]], expected: list[list[np.ndarray]]) -> dict:
    def client(c: int) -> list[tuple[float, int, float]]:
        out, state = [], None
        for k, tokens in enumerate(chunks[c]):
            seconds, logits, state, rows = _chunk(port, tokens, state)
            want = expected[c][k]
            if not (np.allclose(logits, want, rtol=1e-5, atol=1e-5) and (logits.argmax(-1) == want.argmax(-1)).all()):
                raise RuntimeError(f"client {c} chunk {k}: the logits differ from Session.run's")
            out.append((seconds, rows, float(np.abs(logits - want).max())))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(chunks)) as pool:
        rows = [r for rs in pool.map(client, range(len(chunks))) for r in rs]
    wall = time.perf_counter() - t0
    total = np.array([r[0] for r in rows]) * 1e3
    return {"requests": len(rows), "seconds": round(wall, 3), "requests_per_s": round(len(rows) / wall, 2),
            "latency_p50_ms": round(float(np.percentile(total, 50)), 1),
            "latency_p99_ms": round(float(np.percentile(total, 99)), 1),
            "mean_rows_per_forward": round(float(np.mean([r[1] for r in rows])), 2),
            "max_abs_logit_diff": max(r[2] for r in rows)}


def chunk_main(args, session) -> list[dict]:
    """/chunk, batching off then on, for each replica count (one Ray instance, already started)."""
    from ray import serve

    from runtimes.serve import ServeSettings, application

    T = int(session.manifest.signature["inputs"][0]["shape"][1])
    rng = np.random.default_rng(0)
    chunks = [[rng.integers(0, 256, (1, T)).astype(np.int32) for _ in range(args.requests)]
              for _ in range(args.clients)]
    expected = []
    for conversation in chunks:
        state, logits = session.new_state(1), []
        for tokens in conversation:
            out, state = session.run(tokens, state)
            logits.append(out)
        expected.append(logits)
    results = []
    for r in [int(x) for x in args.replicas.split(",")]:
        for max_batch in (1, session.batch_bounds[1]):
            settings = ServeSettings(replicas=r, threads=1, max_concurrent=args.max_concurrent, port=args.port,
                                     max_batch=max_batch, batch_wait_ms=args.batch_wait_ms)
            serve.run(application(args.bundle, settings), name="neat", route_prefix="/")
            run_chunk_load(args.port, [c[:1] for c in chunks[:2]], [e[:1] for e in expected[:2]])  # warm-up
            row = {"replicas": r, "batching": "off" if max_batch == 1 else "on",
                   "batch_wait_ms": args.batch_wait_ms, **run_chunk_load(args.port, chunks, expected)}
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4, help="requests per client, one after another")
    ap.add_argument("--max-new-bytes", type=int, default=64)
    ap.add_argument("--replicas", default="1,2,4")
    ap.add_argument("--max-concurrent", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--chunk", action="store_true", help="measure /chunk, batching off and on, instead of /stream")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0, help="with --chunk: neat serve --batch-wait-ms")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    import runtimes
    from runtimes.serve import ServeSettings, application, init_ray

    counts = [int(x) for x in args.replicas.split(",")]
    session = runtimes.load(args.bundle, threads=1)
    expected = {} if args.chunk else {p: session.generate(p, args.max_new_bytes) for p in PROMPTS}
    port = args.port = _free_port()
    t0 = time.perf_counter()
    init_ray(num_cpus=max(counts))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    started = time.perf_counter() - t0
    results = []
    try:
        for r in counts if not args.chunk else ():
            settings = ServeSettings(replicas=r, threads=1, max_concurrent=args.max_concurrent, port=port)
            t1 = time.perf_counter()
            serve.run(application(args.bundle, settings), name="neat", route_prefix="/")
            deploy = time.perf_counter() - t1
            run_load(port, 2, 1, args.max_new_bytes, expected)  # warm-up: every replica's first calls
            row = {"replicas": r, "deploy_s": round(deploy, 1),
                   **run_load(port, args.clients, args.requests, args.max_new_bytes, expected)}
            print(json.dumps(row), flush=True)
            results.append(row)
        if args.chunk:
            results = chunk_main(args, session)
    finally:
        ray.shutdown()
    record = {"bundle": str(args.bundle), "artifact": session.backend.key, "endpoint": "/chunk" if args.chunk else
              "/stream", "clients": args.clients,
              "requests_per_client": args.requests, "max_new_bytes": args.max_new_bytes,
              "max_concurrent": args.max_concurrent, "ray_start_s": round(started, 1),
              "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                          "platform": platform.platform()},
              "results": results}
    if args.chunk:  # whether `neat serve` batches this artifact by default on this machine (runtimes.serve_batch)
        from runtimes.serve_batch import pays

        record["default_batching"] = pays(session, session.batch_bounds[1]) and session.batch_bounds[1] > 1
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
