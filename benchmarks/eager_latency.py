"""Eager forward latency of the reference model: batch 1, one chunk, on this CPU.

    python -m benchmarks.eager_latency [--checkpoint PATH] [--runs N] [--warmup N] [--out FILE]

Prints a human line per figure, and the full record as JSON on the last line (later benchmarks compare
against it). Median of many runs after warm-up; FLOPs are counted by torch's FlopCounterMode on one forward.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.machine import describe, emit


def measure(checkpoint: str | None, runs: int, warmup: int, batch: int = 1) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from neat.checkpoint import SHIPPED, load_checkpoint
    from neat.model import count_parameters

    model = load_checkpoint(checkpoint)
    inputs = model.example_inputs(batch)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
        for _ in range(warmup):
            model(*inputs)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(*inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else times * 9
    return {
        "benchmark": "eager_latency",
        "model": model.cfg.name,
        "checkpoint": str(checkpoint or SHIPPED.name),
        "batch": batch,
        "chunk_len": model.cfg.chunk_len,
        "runs": runs,
        "warmup": warmup,
        "median_ms": statistics.median(times),
        "p10_ms": q[0],
        "p90_ms": q[-1],
        "params": count_parameters(model),
        "flops_per_chunk": counter.get_total_flops(),
        "machine": describe(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a .safetensors checkpoint (default: the shipped tiny model)")
    parser.add_argument("--runs", type=int, default=300, help="timed runs (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed runs first (default 30)")
    parser.add_argument("--out", type=Path, help="also write the JSON record to this file")
    args = parser.parse_args(argv)
    record = measure(args.checkpoint, args.runs, args.warmup)
    print(f"eager forward, batch 1, {record['chunk_len']} bytes: median {record['median_ms']:.2f} ms "
          f"(p10 {record['p10_ms']:.2f}, p90 {record['p90_ms']:.2f}) over {args.runs} runs")
    print(f"parameters {record['params']:,}; {record['flops_per_chunk'] / 1e6:.1f} MFLOP per chunk")
    emit(record, args.out)
    return record


if __name__ == "__main__":
    main()
