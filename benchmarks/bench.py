"""The benchmark's measurement: every artifact runnable here against the eager reference, in one run.

Per artifact: parity on random chunks with the state carried (max abs/rel error, cosine, argmax), bits per
byte on held-out text, greedy generation equality, load time, cold start (a fresh process: start to first
result) and that process's peak memory, latency p50/p90/p99 at batch 1 after warm-up (each artifact in its
own process, taking turns: `timing`), throughput at batch 1 and at the largest batch the bundle allows, speed as a ratio to the
eager reference measured in the same run, and the share of this machine's limit each reaches (`roofline`).
Generation: 1 KB of held-out text stepped through after a 1 KB held-out prompt (`generation.Follow`: real
text's patch mix; greedy text falls into spaces), by decode steps and by recomputing the partial chunk,
in the same workers taking turns (torch one thread): time to first byte, per-byte p50/p99, bytes/s, the
ratios step/recompute and step/eager's step, the argmax ids against the eager reference's recompute path,
and the share of the per-byte roofline (the work of one stepped byte counted on the eager reference).
torch.compile is measured too, as what the artifacts replace: its steady state as a row labelled
"torch.compile" (the reference compiled, timed like the artifacts: `compiled`; never picked by runtimes.load)
and its first call in a fresh process (`coldstart`), which is that row's cold start.
`gate` checks the record against the speed targets and, as a regression gate, against a baseline record;
`report` renders it (terminal, Markdown, JSON, plot); `run` does all of it for `neat bench`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks import coldstart, compiled, generation, roofline, timing
from benchmarks.gate import targets
from benchmarks.generation import first_difference
from exporters.parity import compare
from neat.bits import cross_entropy_bits
from runtimes.bundle import read_manifest, reference_path
from runtimes.profile import detect
from runtimes.select import EAGER, rank
from runtimes.pick import load
from runtimes.threads import plan
from runtimes.session import Session

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
            total += cross_entropy_bits(logits[0], window[0, c * T + 1:(c + 1) * T + 1], "sum")
            count += T
    return total / count


def runs_on_cpu(manifest, profile, key: str) -> bool:
    """Whether this artifact runs on the CPU here (the machine limits measured are the CPU's)."""
    from runtimes.backends.onnx import providers

    target = EAGER if key in (EAGER, compiled.LABEL) else manifest.artifacts[key].target
    return (target in (EAGER, "exported", "cpu") or (target == "onnx" and providers(profile)[0] == "CPUExecutionProvider")
            or (target == "mlx" and profile.os != "Darwin"))  # mlx[cpu] off a Mac; Apple silicon's GPU on one


def _generation(runs: dict, reference_ids: list[int], work: dict | None, machine: dict, fp32_on_cpu: bool) -> dict:
    """One artifact's generation figures from its timed runs per path (`timing.Workers.generation`)."""
    out = {}
    for path, r in runs.items():
        out[path] = r if "skipped" in r else {**generation.summary(r), "equal_to_reference": r["ids"] == reference_ids}
    step, recompute = out.get("step", {}), out["recompute"]
    if "bytes_per_s" in step:
        out["step_vs_recompute"] = step["bytes_per_s"] / recompute["bytes_per_s"]
        if work and fp32_on_cpu:  # the per-byte work measured is the fp32 reference's
            out["roofline"] = roofline.fraction(work, machine, "fp32", 1.0 / step["bytes_per_s"])
    return out


def bench(bundle: str | Path, runs: int = 50, warmup: int = 5, cold_start: bool = True,
          generate_bytes: int = 32, decode_bytes: int = 1024, work_bytes: int = 256, torch_compile: bool = True,
          report: Callable[[str], None] = lambda _: None) -> dict:
    """The full record for one bundle on this machine (see the module docstring); `report` gets progress.
    decode_bytes: bytes generated per artifact and path after a 1 KB held-out prompt, stepping through the
    held-out text that follows it (benchmarks.generation.Follow; 0: no generation figures); work_bytes: how
    many of them the per-byte work is counted over (on the eager reference);
    torch_compile: the "torch.compile" row (steady state) and, with cold_start, its first call."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    profile = detect()
    T = manifest.signature["inputs"][0]["shape"][1]
    max_batch = manifest.signature.get("dynamic", {}).get("batch", {}).get("max", 1)
    keys = [EAGER] + ([compiled.LABEL] if torch_compile else []) \
        + [c.key for c in rank(manifest, profile, bundle) if c.usable and c.key != EAGER]
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
        prompt = generation.prompt_ids()
        follow = generation.continuation_ids(decode_bytes, len(prompt))
        if decode_bytes:
            report(f"generation: {decode_bytes} held-out bytes after a {len(prompt)}-byte prompt, stepping and "
                   "recomputing, every artifact taking turns")
        gen = workers.generation(prompt, decode_bytes, follow=follow) if decode_bytes else {}
    step_work = None
    if gen and reference.decoding == "step":
        report("the work of one generated byte (FLOPs, bytes moved), on the eager reference")
        step_work = roofline.measure_step_work(reference, prompt, min(work_bytes, decode_bytes), follow)
    machine = roofline.best_of(machine, roofline.measure_machine())
    rows = []
    for key in keys:
        report(key)
        ours = key not in (EAGER, compiled.LABEL)
        session = load(bundle, backend=key) if ours else reference if key == EAGER else compiled.session(bundle)
        text = ref_text if key == EAGER else session.generate(GENERATE_PROMPT, generate_bytes)
        # torch.compile's cold start is its first call in a fresh process, measured below
        cold, peak = coldstart.artifact(bundle, key) if cold_start and key != compiled.LABEL else (None, None)
        precision = manifest.artifacts[key].precision if ours else "fp32"
        median = float(np.median(lat1[key]))
        row = {"artifact": key, "precision": precision, "load_s": load_s[key], **_percentiles(lat1[key]),
               "throughput_bytes_s": {"1": T / median,
                                      str(max_batch): max_batch * T / float(np.median(latmax[key]))},
               "parity": _parity(session, reference), "bits_per_byte": bits_per_byte(session, texts),
               "generation_equal": text == ref_text, "generation_first_difference": first_difference(text, ref_text),
               "cold_start_s": cold, "peak_rss_mib": peak,
               "roofline": roofline.fraction(work, machine, precision, median)
               if runs_on_cpu(manifest, profile, key) else None}
        if gen:
            row["generation"] = _generation(gen[key], gen[EAGER]["recompute"]["ids"], step_work, machine,
                                            precision == "fp32" and runs_on_cpu(manifest, profile, key))
        rows.append(row)
    eager_p50 = rows[0]["p50_ms"]
    eager_step = rows[0].get("generation", {}).get("step", {}).get("bytes_per_s")
    for row in rows:
        row["speedup_vs_eager"] = eager_p50 / row["p50_ms"]
        step = row.get("generation", {}).get("step", {})
        if eager_step and "bytes_per_s" in step:
            row["generation"]["step_vs_eager_step"] = step["bytes_per_s"] / eager_step
    record = {"benchmark": "neat-bench", "bundle": str(bundle), "model": manifest.model.get("name"),
              "chunk_len": T, "max_batch": max_batch, "runs": runs, "profile": profile.to_dict(),
              "versions": {k: v for k, v in profile.libraries.items() if isinstance(v, str)},
              "machine_limits": machine, "work_per_chunk": work, "work_per_generated_byte": step_work,
              "generation": {"prompt_bytes": len(prompt), "bytes": decode_bytes, "threads": plan().step,
                             "text": "held-out"}
              if gen else None,
              "held_out": held_out_identity(texts),
              "artifacts": rows, "chosen": load(bundle).backend.key, "torch_compile": None}
    if cold_start and torch_compile:
        report("torch.compile first call (fresh process, empty compile cache, then warm)")
        with tempfile.TemporaryDirectory(prefix="neat-bench-inductor-") as cache:
            record["torch_compile"] = tc = coldstart.torch_compile(bundle, Path(cache))
        for row in rows:
            if row["artifact"] == compiled.LABEL:
                row["cold_start_s"], row["peak_rss_mib"] = tc["first_call_s"], tc["peak_rss_mib"]
    record["targets"] = targets(record)
    return record
