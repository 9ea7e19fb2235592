"""Export time and artifact size per target for the shipped tiny model, on this machine.

    python -m benchmarks.export_times [--targets all] [--precision fp32] [--out FILE]

Each target is built into one fresh bundle (the capture is shared, as `neat export all` does); the
figures are the build seconds (decode methods included) and sizes the exporters record, plus the seconds of
every verification (the forward's, each method's and the decode stream's) and the verdict.
Prints a line per target and the full record as JSON on the last line.
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe, emit


class Steps:
    """The seconds of each step `export_bundle` reports (`steps`), and per artifact key the seconds of every
    check after its build (`checks`): the forward's, each method's, the decode stream's, whose steps follow
    the artifact's own build step and carry no key of their own."""

    def __init__(self):
        self.steps: dict[str, float] = {}
        self.checks: dict[str, float] = {}
        self.current = ""

    @contextlib.contextmanager
    def timer(self, label: str):
        if label.endswith(": build") and not label.startswith(" "):
            self.current = label.removesuffix(": build")
        t0 = time.perf_counter()
        yield
        self.done(label, time.perf_counter() - t0)

    def done(self, label: str, seconds: float) -> None:
        key = f"{self.current}:{label}" if label.startswith(" ") else label  # a method's step, per artifact
        self.steps[key] = round(seconds, 2)
        if "verify" in label or label.lstrip().startswith("decode"):
            self.checks[self.current] = round(self.checks.get(self.current, 0.0) + seconds, 2)


def measure(targets: list[str], precision: str, options: dict | None = None) -> dict:
    from exporters.build import export_bundle
    from neat.export_spec import neat_spec

    spec = neat_spec()
    timed = Steps()
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = export_bundle(spec, targets, Path(tmp) / "bundle", precision, options or {}, step=timed.timer)
    rows = [{
        "target": o.target, "precision": o.precision, "verdict": o.verdict, "build_seconds": o.build_seconds,
        "verify_seconds": timed.checks.get(o.key), "size_bytes": o.size,
    } for o in outcomes]
    capture = next((v for k, v in timed.steps.items() if k.startswith("capture")), None)
    return {"benchmark": "export_times", "model": spec.name, "precision": precision,
            "capture_seconds": capture, "targets": rows, "steps": timed.steps, "machine": describe()}


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
