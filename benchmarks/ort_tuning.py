"""ONNX Runtime's settings on a bundle's onnx artifacts (issue 27), alternated in one process so that a busy
machine slows every setting alike: the graph optimization level, an offline-optimized file loaded without
optimizing again, and the int8 artifact beside fp32. Per setting: session creation (every file of the
artifact), the chunk forward at batch 1 (p50) and greedy generation by decode steps (bytes/s).

    python -m benchmarks.ort_tuning BUNDLE [--keys onnx-fp32,onnx-int8] [--settings default,all] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

LEVELS = ("disable", "basic", "extended", "all")


@contextmanager
def level(name: str, offline: bool = False):
    """Every ONNX Runtime session made inside loads the plain graph (FILE) at graph optimization level `name`;
    with `offline`, a file optimized once at that level (beside it, `*.<name>.onnx`) with optimization off.
    "default": as the backend does (runtimes.backends.onnx)."""
    import onnxruntime as ort

    from runtimes.backends.onnx import FILE, OPTIMIZED

    if name == "default":
        yield
        return
    original = ort.InferenceSession
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}

    def session(path, options=None, *args, **kwargs):
        path, options = str(path).replace(OPTIMIZED, FILE), options or ort.SessionOptions()
        options.graph_optimization_level = levels[name]
        if offline:
            done = Path(path.replace(".onnx", f".{name}.onnx"))
            if not done.exists():
                make = ort.SessionOptions()
                make.graph_optimization_level, make.optimized_model_filepath = levels[name], str(done)
                original(path, make, providers=["CPUExecutionProvider"])
            path, options.graph_optimization_level = str(done), levels["disable"]
        return original(path, options, *args, **kwargs)

    ort.InferenceSession = session
    try:
        yield
    finally:
        ort.InferenceSession = original


def measure(bundle: Path, key: str, prompt: list[int], n_bytes: int, chunks: int = 30) -> dict:
    import runtimes
    from benchmarks.generation import summary, timed

    t0 = time.perf_counter()
    s = runtimes.load(bundle, backend=key, autotune=False)
    for m in s.methods:  # every method's session, as generation loads them
        s._methods[m] = s._load_method(m)
    load_s = time.perf_counter() - t0
    times = s.latencies(batch=1, runs=chunks, warmup=1)
    gen = summary(timed(s, "step", prompt, n_bytes))
    return {"load_s": load_s, "chunk_p50_ms": float(np.median(times)) * 1e3, "bytes_per_s": gen["bytes_per_s"]}


def bits_per_byte(bundle: Path, key: str, chunks: int) -> float:
    """Next-byte bits per byte of held-out prose, `chunks` chunks at batch 1 with the state carried."""
    import runtimes
    from neat.bits import cross_entropy_bits
    from neat.data import text_stream

    s = runtimes.load(bundle, backend=key, autotune=False)
    t = s.manifest.signature["inputs"][0]["shape"][1]
    ids = text_stream("prose", held_out=True).tokens[: chunks * t].astype(np.int32)[None]
    state, logits = s.new_state(1), []
    for i in range(chunks):
        out, state = s.run(ids[:, i * t:(i + 1) * t], state)
        logits.append(out)
    return float(cross_entropy_bits(np.concatenate(logits, axis=1)[:, :-1], ids[:, 1:]))


def main() -> None:
    import runtimes
    from benchmarks.generation import prompt_ids

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--keys", default="onnx-fp32")
    parser.add_argument("--settings", default="default,disable,basic,extended,all,all+offline",
                        help="comma-separated: default (the backend's choice), a level (disable, basic, extended, "
                             "all) on the plain graph, or a level+offline (optimized once, loaded as it is)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bytes", type=int, default=128)
    parser.add_argument("--bpb-chunks", type=int, default=32, help="held-out chunks for bits per byte (0: none)")
    args = parser.parse_args()
    prompt, keys = prompt_ids(512), args.keys.split(",")
    if args.bpb_chunks:
        print("bits per byte: " + ", ".join(f"{k} {bits_per_byte(args.bundle, k, args.bpb_chunks):.4f}" for k in keys))
    for setting in args.settings.split(","):  # the offline files made once, before anything is timed
        name, _, offline = setting.partition("+")
        with level(name, bool(offline)):
            for key in keys:
                s = runtimes.load(args.bundle, backend=key, autotune=False)
                [s._load_method(m) for m in s.methods]
    rows: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for key in keys:
            for setting in args.settings.split(","):
                name, _, offline = setting.partition("+")
                with level(name, bool(offline)):
                    got = measure(args.bundle, key, prompt, args.bytes)
                rows.setdefault(f"{key} {setting}", []).append(got)
                print(f"round {r} {key} {setting}: " + ", ".join(f"{k} {v:.3g}" for k, v in got.items()), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    out = {k: {m: float(np.median([g[m] for g in v])) for m in v[0]} for k, v in rows.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
