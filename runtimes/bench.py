"""The benchmark: every artifact runnable here against the eager reference, in one run.

Per artifact: parity on random chunks with the state carried (max abs/rel error, cosine, argmax), bits per
byte on held-out text, greedy generation equality, load time, cold start (a fresh process: start to first
result) and that process's peak memory, latency p50/p90/p99 at batch 1 after warm-up (each artifact in its
own process, taking turns: `timing`), throughput at batch 1 and at the largest batch the bundle allows, speed as a ratio to the
eager reference measured in the same run, and the share of this machine's limit each reaches (`roofline`).
torch.compile's first call is measured too: it is what the artifacts replace (`coldstart`).
A baseline record turns it into a regression gate (`gate`); `targets` checks the speed targets.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from runtimes import coldstart, roofline, timing
from runtimes.bundle import read_manifest, reference_path
from runtimes.generation import first_difference
from runtimes.parity import compare
from runtimes.profile import detect
from runtimes.select import EAGER, rank
from runtimes.session import Session, load

GENERATE_PROMPT = b"The module provides functions for "
HELD_OUT_CHUNKS = 8  # per held-out text (prose, code), state carried across them


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
        m = compare(ref, got, session.manifest.signature["outputs"][0].get("ignore_below"), rows=True)
        worst = m if worst is None else {k: (max if k in ("max_abs", "error") else min)(worst[k], m[k])
                                         for k in m}
    return worst


def held_out_text(T: int) -> list[np.ndarray]:
    """One (1, HELD_OUT_CHUNKS*T + 1) window per held-out text (prose and code the model never trained on)."""
    from neat.data import text_stream

    return [text_stream(task, held_out=True).tokens[None, :HELD_OUT_CHUNKS * T + 1] for task in ("prose", "code")]


def held_out_identity(texts: list[np.ndarray]) -> dict:
    """Size and hash of the held-out text: it comes from this Python's standard library, so bits per byte
    are comparable between two records only when the hashes match."""
    import hashlib

    return {"bytes": sum(t.shape[1] - 1 for t in texts),
            "sha256": hashlib.sha256(b"".join(t.astype(np.uint8).tobytes() for t in texts)).hexdigest()}


def bits_per_byte(session: Session, texts: list[np.ndarray]) -> float:
    """Mean next-byte cross-entropy in bits over the held-out windows, chunk by chunk with the state carried."""
    T = session.manifest.signature["inputs"][0]["shape"][1]
    total, count = 0.0, 0
    for window in texts:
        state = session.new_state(1)
        for c in range((window.shape[1] - 1) // T):
            logits, state = session.run(window[:, c * T:(c + 1) * T].astype(np.int32), state)
            z = logits[0].astype(np.float64)
            z -= z.max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            total -= logp[np.arange(T), window[0, c * T + 1:(c + 1) * T + 1]].sum()
            count += T
    return total / count / np.log(2)


def runs_on_cpu(manifest, profile, key: str) -> bool:
    """Whether this artifact runs on the CPU here (the machine limits measured are the CPU's)."""
    target = EAGER if key == EAGER else manifest.artifacts[key].target
    onnx_gpu = "CUDAExecutionProvider" in profile.libraries.get("onnxruntime_providers", [])  # as the loader does
    return target in (EAGER, "exported", "cpu") or (target == "onnx" and not onnx_gpu)


def bench(bundle: str | Path, runs: int = 50, warmup: int = 5, cold_start: bool = True,
          generate_bytes: int = 32, report: Callable[[str], None] = lambda _: None) -> dict:
    """The full record for one bundle on this machine (see the module docstring); `report` gets progress."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    profile = detect()
    T = manifest.signature["inputs"][0]["shape"][1]
    max_batch = manifest.signature.get("dynamic", {}).get("batch", {}).get("max", 1)
    keys = [EAGER] + [c.key for c in rank(manifest, profile, bundle) if c.usable and c.key != EAGER]
    report("this machine's matmul rate and memory bandwidth")
    machine = roofline.measure_machine()
    reference = load(bundle, backend=EAGER)
    work = roofline.measure_work(reference_path(bundle, manifest), reference.new_state(1), T,
                                 manifest.signature["outputs"][0]["shape"][-1])
    ref_text = reference.generate(GENERATE_PROMPT, generate_bytes)
    texts = held_out_text(T)
    report("starting one worker process per artifact")
    with timing.Workers(bundle, keys) as workers:
        report("latency at batch 1, every artifact taking turns")
        lat1 = workers.latencies(1, runs, warmup)
        if max_batch > 1:
            report(f"latency at batch {max_batch}")
        latmax = workers.latencies(max_batch, max(5, runs // 5), 2) if max_batch > 1 else lat1
        load_s = workers.load_s
    machine = roofline.best_of(machine, roofline.measure_machine())
    rows = []
    for key in keys:
        report(key)
        session = reference if key == EAGER else load(bundle, backend=key)
        text = ref_text if key == EAGER else session.generate(GENERATE_PROMPT, generate_bytes)
        cold, peak = coldstart.artifact(bundle, key) if cold_start else (None, None)
        precision = "fp32" if key == EAGER else manifest.artifacts[key].precision
        median = float(np.median(lat1[key]))
        row = {"artifact": key, "precision": precision, "load_s": load_s[key], **_percentiles(lat1[key]),
               "throughput_bytes_s": {"1": T / median,
                                      str(max_batch): max_batch * T / float(np.median(latmax[key]))},
               "parity": _parity(session, reference), "bits_per_byte": bits_per_byte(session, texts),
               "generation_equal": text == ref_text, "generation_first_difference": first_difference(text, ref_text),
               "cold_start_s": cold, "peak_rss_mib": peak,
               "roofline": roofline.fraction(work, machine, precision, median)
               if runs_on_cpu(manifest, profile, key) else None}
        rows.append(row)
    eager_p50 = rows[0]["p50_ms"]
    for row in rows:
        row["speedup_vs_eager"] = eager_p50 / row["p50_ms"]
    record = {"benchmark": "neat-bench", "bundle": str(bundle), "model": manifest.model.get("name"),
              "chunk_len": T, "max_batch": max_batch, "runs": runs, "profile": profile.to_dict(),
              "versions": {k: v for k, v in profile.libraries.items() if isinstance(v, str)},
              "machine_limits": machine, "work_per_chunk": work, "held_out": held_out_identity(texts),
              "artifacts": rows, "chosen": load(bundle).backend.key, "torch_compile": None}
    if cold_start:
        report("torch.compile first call (fresh process, empty compile cache, then warm)")
        with tempfile.TemporaryDirectory(prefix="neat-bench-inductor-") as cache:
            record["torch_compile"] = coldstart.torch_compile(bundle, Path(cache))
    record["targets"] = targets(record)
    return record


def targets(record: dict) -> list[dict]:
    """The speed targets for the best CPU artifact (batch 1, one chunk, same run), each measured or None."""
    rows = {r["artifact"]: r for r in record["artifacts"]}
    on_cpu = [r for r in record["artifacts"] if r.get("roofline")]  # rows measured against the CPU's limits
    compiled = [r for r in on_cpu if not r["artifact"].startswith(("eager", "onnx"))]
    best = min(compiled, key=lambda r: r["p50_ms"], default=None)
    onnx = min((r for r in on_cpu if r["artifact"].startswith("onnx")), key=lambda r: r["p50_ms"],
               default=None)
    chosen = rows.get(record.get("chosen"), {})
    tc = record.get("torch_compile") or {}

    def item(name, measured, goal, unit):
        return {"target": name, "measured": measured, "goal": goal, "unit": unit,
                "met": None if measured is None else (measured < goal if unit == "s" else measured >= goal)}

    return [
        item(f"best compiled CPU artifact ({best['artifact'] if best else '-'}) vs eager", best and best["speedup_vs_eager"], 2.0, "x"),
        item("best compiled CPU artifact vs ONNX Runtime (CPU)", best and onnx and onnx["p50_ms"] / best["p50_ms"], 1.2, "x"),
        item(f"cold start of the chosen artifact ({record.get('chosen')})", chosen.get("cold_start_s"), 3.0, "s"),
        item("torch.compile first call / chosen cold start",
             tc.get("first_call_s") and chosen.get("cold_start_s") and tc["first_call_s"] / chosen["cold_start_s"],
             5.0, "x"),
    ]


def gate(record: dict, baseline: dict, max_regression_pct: float) -> list[str]:
    """Regressions of `record` against `baseline`: speed ratios down by more than the allowance, parity
    worse (argmax agreement lower, or max abs error 10x higher), bits per byte on held-out text more than 1%
    higher (only when both records scored the same text), generation no longer equal."""
    old = {r["artifact"]: r for r in baseline["artifacts"]}
    same_text = (record.get("held_out") or {}).get("sha256") == (baseline.get("held_out") or {}).get("sha256")
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
        if same_text and base.get("bits_per_byte") and row.get("bits_per_byte", 0) > base["bits_per_byte"] * 1.01:
            problems.append(f"{row['artifact']}: {row['bits_per_byte']:.4f} bits per byte on held-out text, "
                            f"baseline {base['bits_per_byte']:.4f} (more than 1% worse)")
        if base.get("generation_equal") and not row["generation_equal"]:
            problems.append(f"{row['artifact']}: greedy generation now differs from the reference at byte "
                            f"{row['generation_first_difference']}")
    missing = sorted(set(old) - {r["artifact"] for r in record["artifacts"]})
    problems += [f"{k}: in the baseline but not measured in this run" for k in missing]
    return problems


def limit_cell(row: dict) -> str:
    """An artifact's share of the machine limit, or '-' where the limits measured (the CPU's) do not apply."""
    return f"{row['roofline']['limit_fraction']:.0%}" if row.get("roofline") else "-"


def target_lines(record: dict) -> list[str]:
    out = []
    for t in record.get("targets", []):
        got = "not measured" if t["measured"] is None else f"{t['measured']:.2f}{t['unit']}"
        verdict = {True: "met", False: "MISSED", None: "-"}[t["met"]]
        goal = f"< {t['goal']:g} s" if t["unit"] == "s" else f">= {t['goal']:g}x"
        out.append(f"{t['target']}: {got} (target {goal}): {verdict}")
    return out


def limits_line(record: dict) -> str:
    m, w = record["machine_limits"], record["work_per_chunk"]
    return (f"machine limits measured in this run: {m['matmul_flops_s'] / 1e9:.0f} GFLOP/s fp32 matmul, "
            f"{m['bandwidth_bytes_s'] / 1e9:.1f} GB/s memory copy ({m['library']}); one chunk is "
            f"{w['flops'] / 1e6:.0f} MFLOP and moves at least {w['bytes']['fp32'] / 1e6:.1f} MB at fp32")


def compile_line(record: dict) -> str:
    tc = record.get("torch_compile")
    if not tc:
        return "torch.compile first call: not measured (--no-cold-start)"
    if tc["first_call_s"] is None:
        return f"torch.compile first call: failed ({tc['error']})"
    return (f"torch.compile first call in a fresh process: {tc['first_call_s']:.1f} s with an empty compile cache, "
            f"{tc['warm_cache_first_call_s']:.1f} s with a warm one")


def markdown(record: dict) -> str:
    big = str(record["max_batch"])
    wide = big != "1"  # a throughput column for the largest batch only when it differs from batch 1
    lines = [f"# neat bench: {record['model']} ({record['profile']['cpu']}, {record['profile']['cores']} cores)", "",
             "| artifact | p50 ms | p99 ms | vs eager | % of limit | bytes/s b1 | " + (f"bytes/s b{big} | " if wide else "")
             + "cold start s | peak MiB | max abs err | argmax | bits/byte | greedy equal |",
             "|---" * (12 + wide) + "|"]
    for r in record["artifacts"]:
        tp = r["throughput_bytes_s"]
        cold = f"{r['cold_start_s']:.2f}" if r["cold_start_s"] is not None else "-"
        peak = f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "-"
        lines.append(f"| {r['artifact']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['speedup_vs_eager']:.2f}x | "
                     f"{limit_cell(r)} | {tp['1']:,.0f} | " + (f"{tp[big]:,.0f} | " if wide else "")
                     + f"{cold} | {peak} | {r['parity']['max_abs']:.1e} | {r['parity']['argmax']:.1%} | "
                     f"{r['bits_per_byte']:.3f} | {r['generation_equal']} |")
    lines += ["", limits_line(record) + ".", "", compile_line(record) + ".", "",
              f"Chosen artifact on this machine: {record['chosen']}.", ""]
    lines += [f"- {line}" for line in target_lines(record)]
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
