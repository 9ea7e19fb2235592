"""The benchmark: every artifact runnable here against the eager reference, in one run.

Per artifact: parity on random chunks with the state carried (max abs/rel error, cosine, argmax), greedy
generation equality, load time, cold start (a fresh process: start to first result) and that process's
peak memory, latency p50/p90/p99 after warm-up at batch 1, throughput at batch 1 and at the largest batch
the bundle allows, and speed as a ratio to the eager reference measured in the same run.
A baseline record turns it into a regression gate (`gate`).
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from runtimes.bundle import read_manifest
from runtimes.generation import first_difference
from runtimes.parity import compare
from runtimes.profile import detect
from runtimes.select import EAGER, rank
from runtimes.session import Session, load

GENERATE_PROMPT = b"The module provides functions for "
COLD_START = """
import sys, time
t0 = time.perf_counter()
import numpy as np, runtimes
s = runtimes.load(sys.argv[1], backend=sys.argv[2])
T = s.manifest.signature["inputs"][0]["shape"][1]
s.run(np.zeros((1, T), np.int32), s.new_state(1))
import resource
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99))}


def _parity(session: Session, reference: Session, chunks: int = 2) -> dict:
    T = session.manifest.signature["inputs"][0]["shape"][1]
    rng = np.random.default_rng(7)
    s_ref, s_got, worst = reference.new_state(1), session.new_state(1), None
    for _ in range(chunks):
        tokens = rng.integers(0, 256, (1, T)).astype(np.int32)
        ref, s_ref = reference.run(tokens, s_ref)
        got, s_got = session.run(tokens, s_got)
        m = compare(ref, got)
        worst = m if worst is None else {k: (max if k in ("max_abs", "max_rel") else min)(worst[k], m[k])
                                         for k in m}
    return worst


def _cold_start(bundle: Path, key: str) -> tuple[float | None, float | None]:
    """(seconds from process start to first result, peak RSS of that process in MiB)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", COLD_START, str(bundle), key], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        return None, None
    peak = int(res.stdout.split()[-1])
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return wall, peak * scale / 2**20


def bench(bundle: str | Path, runs: int = 50, warmup: int = 5, cold_start: bool = True,
          generate_bytes: int = 32, report: Callable[[str], None] = lambda _: None) -> dict:
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    profile = detect()
    T = manifest.signature["inputs"][0]["shape"][1]
    max_batch = manifest.signature.get("dynamic", {}).get("batch", {}).get("max", 1)
    keys = [EAGER] + [c.key for c in rank(manifest, profile, bundle) if c.usable and c.key != EAGER]
    reference = load(bundle, backend=EAGER)
    ref_text = reference.generate(GENERATE_PROMPT, generate_bytes)
    rows = []
    for key in keys:
        report(key)
        t0 = time.perf_counter()
        session = reference if key == EAGER else load(bundle, backend=key)
        load_s = time.perf_counter() - t0
        lat1 = session.latencies(1, runs, warmup)
        latmax = session.latencies(max_batch, max(5, runs // 5), 2) if max_batch > 1 else lat1
        text = ref_text if key == EAGER else session.generate(GENERATE_PROMPT, generate_bytes)
        cold, peak = _cold_start(bundle, key) if cold_start else (None, None)
        row = {"artifact": key, "load_s": load_s, **_percentiles(lat1),
               "throughput_bytes_s": {"1": T / float(np.median(lat1)),
                                      str(max_batch): max_batch * T / float(np.median(latmax))},
               "parity": _parity(session, reference), "generation_equal": text == ref_text,
               "generation_first_difference": first_difference(text, ref_text),
               "cold_start_s": cold, "peak_rss_mib": peak}
        rows.append(row)
    eager_p50 = rows[0]["p50_ms"]
    for row in rows:
        row["speedup_vs_eager"] = eager_p50 / row["p50_ms"]
    return {"benchmark": "neat-bench", "bundle": str(bundle), "model": manifest.model.get("name"),
            "chunk_len": T, "max_batch": max_batch, "runs": runs, "profile": profile.to_dict(),
            "versions": {k: v for k, v in profile.libraries.items() if isinstance(v, str)}, "artifacts": rows}


def gate(record: dict, baseline: dict, max_regression_pct: float) -> list[str]:
    """Regressions of `record` against `baseline`: speed ratios down by more than the allowance, parity
    worse (argmax agreement lower, or max abs error 10x higher), generation no longer equal."""
    old = {r["artifact"]: r for r in baseline["artifacts"]}
    problems = []
    for row in record["artifacts"]:
        base = old.get(row["artifact"])
        if base is None:
            continue
        floor = base["speedup_vs_eager"] * (1 - max_regression_pct / 100)
        if row["speedup_vs_eager"] < floor:
            problems.append(f"{row['artifact']}: speed {row['speedup_vs_eager']:.2f}x eager, baseline "
                            f"{base['speedup_vs_eager']:.2f}x (allowed down to {floor:.2f}x)")
        if row["parity"]["argmax"] < base["parity"]["argmax"]:
            problems.append(f"{row['artifact']}: argmax agreement {row['parity']['argmax']:.2%}, baseline "
                            f"{base['parity']['argmax']:.2%}")
        if row["parity"]["max_abs"] > 10 * base["parity"]["max_abs"] + 1e-6:
            problems.append(f"{row['artifact']}: max abs error {row['parity']['max_abs']:.2e}, baseline "
                            f"{base['parity']['max_abs']:.2e}")
        if base.get("generation_equal") and not row["generation_equal"]:
            problems.append(f"{row['artifact']}: greedy generation now differs from the reference at byte "
                            f"{row['generation_first_difference']}")
    missing = sorted(set(old) - {r["artifact"] for r in record["artifacts"]})
    problems += [f"{k}: in the baseline but not measured in this run" for k in missing]
    return problems


def markdown(record: dict) -> str:
    lines = [f"# neat bench: {record['model']} ({record['profile']['cpu']}, {record['profile']['cores']} cores)", "",
             f"| artifact | p50 ms | p99 ms | vs eager | bytes/s b1 | bytes/s b{record['max_batch']} | "
             "cold start s | peak MiB | max abs err | argmax | greedy equal |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["artifacts"]:
        tp = r["throughput_bytes_s"]
        cold = f"{r['cold_start_s']:.2f}" if r["cold_start_s"] is not None else "-"
        peak = f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "-"
        lines.append(f"| {r['artifact']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['speedup_vs_eager']:.2f}x | "
                     f"{tp['1']:,.0f} | {tp[str(record['max_batch'])]:,.0f} | {cold} | {peak} | "
                     f"{r['parity']['max_abs']:.1e} | {r['parity']['argmax']:.1%} | {r['generation_equal']} |")
    return "\n".join(lines) + "\n"


def save_json(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def plot(record: dict, path: Path) -> Path:
    """Two panels: p50 latency (with p99 whiskers) and speed ratio to eager, per artifact (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from runtimes.errors import BackendUnavailable

        raise BackendUnavailable('--plot needs matplotlib: pip install "neat-deploy[all]"') from None
    rows = record["artifacts"]
    names = [r["artifact"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    p50 = [r["p50_ms"] for r in rows]
    whisk = [max(0.0, r["p99_ms"] - r["p50_ms"]) for r in rows]
    left.bar(names, p50, yerr=[[0] * len(rows), whisk], color="#4C72B0", capsize=4)
    left.set_ylabel("ms per chunk (p50, whisker p99)")
    left.set_title(f"latency, batch 1, {record['chunk_len']} bytes")
    right.bar(names, [r["speedup_vs_eager"] for r in rows], color="#55A868")
    right.axhline(1.0, color="grey", linewidth=1, linestyle="--")
    right.set_ylabel("speed vs eager (x)")
    right.set_title("ratio to the eager reference, same run")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"neat bench: {record['model']} on {record['profile']['cpu']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
