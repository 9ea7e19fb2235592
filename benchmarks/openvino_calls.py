"""Per-call time of a bundle's decode methods: ONNX Runtime against OpenVINO as the backend runs it (static
shapes, the thread count given) and as it ran before (dynamic shapes; default threads). benchmarks/NOTES.md,
"OpenVINO", has the figures and what they showed.

    python -m benchmarks.openvino_calls BUNDLE [METHOD ...]      # default: every method of the bundle

The bundle needs an onnx-fp32 and an openvino-fp32 artifact. Inputs: zeros of the manifest's shapes at batch 1.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

CALLS, WARMUP = 200, 20


def median_ms(fn, args) -> float:
    for _ in range(WARMUP):
        fn(*args)
    times = []
    for _ in range(CALLS):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def zeros(entry: dict) -> list[np.ndarray]:
    return [np.zeros([1 if isinstance(d, str) else d for d in i["shape"]], i["dtype"])
            for i in entry["inputs"] + entry.get("state", [])]


def main(bundle: Path, methods: list[str]) -> None:
    from runtimes import backends
    from runtimes.bundle import read_manifest
    from runtimes.profile import detect

    manifest, profile = read_manifest(bundle), detect()
    ovb = backends.get("openvino")
    req = manifest.artifacts["openvino-fp32"].requirements
    signature = manifest.signature.get("methods", {})
    for method in methods or list(signature):
        args = zeros(signature[method])
        row = {"onnx, 1 thread": median_ms(backends.get("onnx").load(bundle / "onnx-fp32" / method, {}, profile, 1), args)}
        row["openvino, 1 thread, static"] = median_ms(ovb.load(bundle / "openvino-fp32" / method, req, profile, 1), args)
        static, ovb.STATIC_SHAPES = ovb.STATIC_SHAPES, 0  # the dynamic model only
        try:
            row["openvino, 1 thread, dynamic"] = median_ms(ovb.load(bundle / "openvino-fp32" / method, req, profile, 1), args)
            row["openvino, default threads, dynamic"] = median_ms(
                ovb.load(bundle / "openvino-fp32" / method, {**req, "threads": None}, profile, None), args)
        finally:
            ovb.STATIC_SHAPES = static
        print(f"{method} ({len(args)} inputs): " + ", ".join(f"{k} {v:.3f} ms" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
