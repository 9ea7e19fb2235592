"""Export time and artifact size per target for the shipped tiny model, on this machine.

    python -m benchmarks.export_times [--targets all] [--precision fp32] [--out FILE]

Each target is built into one fresh bundle (the capture is shared, as `neat export all` does); the
figures are the build seconds and sizes the exporters record, plus verification time and verdict.
Prints a line per target and the full record as JSON on the last line.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe, emit


def measure(targets: list[str], precision: str, options: dict | None = None) -> dict:
    from exporters.build import export_bundle
    from neat.export_spec import neat_spec

    spec = neat_spec()
    steps: dict[str, float] = {}

    class Timer:
        def __init__(self, label):
            self.label = label

        def __enter__(self):
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            steps[self.label] = round(time.perf_counter() - self.t0, 2)

    with tempfile.TemporaryDirectory() as tmp:
        outcomes = export_bundle(spec, targets, Path(tmp) / "bundle", precision, options or {}, step=Timer)
    rows = [{
        "target": o.target, "precision": o.precision, "verdict": o.verdict, "build_seconds": o.build_seconds,
        "verify_seconds": steps.get(f"{o.key}: verify against the reference"), "size_bytes": o.size,
    } for o in outcomes]
    capture = next((v for k, v in steps.items() if k.startswith("capture")), None)
    return {"benchmark": "export_times", "model": spec.name, "precision": precision,
            "capture_seconds": capture, "targets": rows, "machine": describe()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["all"], help="targets to build (default: all)")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16 or int8 (default fp32)")
    parser.add_argument("--out", type=Path, help="also write the JSON record to this file")
    args = parser.parse_args(argv)
    record = measure(args.targets, args.precision, {"compute_capabilities": ("8.6", "8.9")})
    print(f"capture (torch.export): {record['capture_seconds']} s")
    for r in record["targets"]:
        print(f"{r['target']:>9} {r['precision']}: build {r['build_seconds']:7.2f} s, verify "
              f"{r['verify_seconds'] or 0:6.2f} s, {r['size_bytes'] / 2**20:6.2f} MiB, {r['verdict']}")
    emit(record, args.out)
    return record


if __name__ == "__main__":
    main()
