"""`neat bench --load PROFILE`: every CPU artifact, at each thread setting, idle and then with the machine
busy (benchmarks.busy), side by side.

Per artifact and setting, in a worker process of its own (benchmarks.timing.Workers, taking turns): chunk
latency p50/p99 at batch 1, and generation by decode steps after a held-out prompt, stepping through the
held-out text that follows it (bytes/s after the first byte, and the model's argmax at each byte, which must
not change with the threads or the load). Settings: the default thread
policy (runtimes.threads) and one thread per usable core (what the libraries do by default).
Each generation also records the share of a core the worker received (its CPU time over the wall time), so a
loaded figure separates what the scheduler took (the share) from what the runtime lost on the CPU time it
got (bytes per CPU-second, loaded over idle).
Bars (issue 33, same run): under load the artifact `runtimes.load` picks generates at least half its idle
bytes/s and its chunk p99 is at most 3x its idle p99; idle and loaded, it is within 5% of the fastest
artifact's generation.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from benchmarks.busy import PROFILES, busy, jobs, load_average
from benchmarks.generation import continuation_ids, prompt_ids, summary
from benchmarks.timing import Workers
from runtimes.threads import plan, usable_cores

MIN_GEN_RATIO, MAX_P99_RATIO, PICK_WITHIN = 0.5, 3.0, 0.05


def _measure(bundle: Path, labels: list[str], runs: int, prompt: list[int], follow: list[int]) -> dict[str, dict]:
    with Workers(bundle, labels) as workers:
        chunk = workers.latencies(1, runs, warmup=3)
        gen = workers.generation(prompt, len(follow), paths=("step",), follow=follow) if follow else {}
    out = {}
    for label in labels:
        ms = np.asarray(chunk[label]) * 1e3
        row = {"chunk_p50_ms": float(np.percentile(ms, 50)), "chunk_p99_ms": float(np.percentile(ms, 99))}
        g = gen.get(label, {}).get("step")
        if g and "skipped" not in g:
            row |= {"bytes_per_s": summary(g)["bytes_per_s"],
                    "ids_sha256": hashlib.sha256(bytes(g["ids"])).hexdigest()[:16]}
            if "cpu_s" in g:  # the share of a core the process got while generating
                row["cpu_share"] = g["cpu_s"] / max(sum(g["gaps_s"]), 1e-12)
        out[label] = row
    return out


def study(bundle: Path, profile: str, runs: int = 30, generate_bytes: int = 256, keys: list[str] | None = None,
          progress=lambda msg: None, settings: list[int | None] | None = None) -> dict:
    """Measure idle, then under `profile`, and judge the pick: the record (JSON-ready). keys: the artifacts
    (default: every usable CPU artifact); settings: thread counts (None: the policy; default: the policy
    and one thread per usable core)."""
    import runtimes

    cores, where = usable_cores()
    jobs(profile, cores)  # an unknown profile: refused before anything is measured
    chosen = runtimes.load(bundle)
    if keys is None:  # the CPU artifacts that would load here (requirements, integrity, trust)
        from runtimes.bundle import read_manifest
        from runtimes.measured import CPU_TARGETS
        from runtimes.select import rank
        from runtimes.trust import screen

        manifest = read_manifest(bundle)
        ranked = rank(manifest, runtimes.detect(), bundle)
        screen(ranked, bundle, manifest, None)
        keys = [c.key for c in ranked if c.usable and c.target in CPU_TARGETS]
    settings = settings or [None] + ([cores] if cores > 1 else [])
    labels = [k if s is None else f"{k}@{s}" for k in keys for s in settings]
    prompt = prompt_ids()
    follow = continuation_ids(generate_bytes, len(prompt))
    progress(f"idle: {len(labels)} artifact/thread settings")
    idle = _measure(bundle, labels, runs, prompt, follow)
    progress(f"loaded ({profile}: {PROFILES[profile]})")
    before = load_average()
    with busy(profile, bundle, cores) as names:
        loaded = _measure(bundle, labels, runs, prompt, follow)
        during = load_average()
    rows = []
    for label in labels:
        key, _, n = label.partition("@")
        i, b = idle[label], loaded[label]
        row = {"artifact": key, "threads": int(n) if n else None, "idle": i, "loaded": b,
               "p99_ratio": b["chunk_p99_ms"] / i["chunk_p99_ms"]}
        if "bytes_per_s" in i and "bytes_per_s" in b:
            row["gen_ratio"] = b["bytes_per_s"] / i["bytes_per_s"]
        if "cpu_share" in i and "cpu_share" in b:  # bytes per CPU-second, loaded over idle: what the load
            # cost beyond the CPU time the scheduler took away (1: nothing; < 1: waits, spinning, cache misses)
            row["cpu_efficiency"] = row["gen_ratio"] * i["cpu_share"] / b["cpu_share"]
        rows.append(row)
    record = {"benchmark": "neat-bench-load", "bundle": str(bundle), "profile": profile, "jobs": names,
              "load_average": {"before": before, "during": during}, "usable_cores": cores, "cores_from": where,
              "policy": plan().__dict__, "runs": runs, "generate_bytes": generate_bytes, "prompt_bytes": len(prompt),
              "chosen": chosen.backend.key, "rows": rows}
    record["bars"] = bars(record)
    return record


def parse_profiles(text: str) -> list[str]:
    """`--load`'s value: one profile, several separated by commas, or `all` (every profile, in order)."""
    names = list(PROFILES) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROFILES]
    if unknown or not names:
        raise ValueError(f"unknown load profile {', '.join(map(repr, unknown)) or repr(text)}; give one of "
                         f"{', '.join(PROFILES)}, several separated by commas, or all")
    return list(dict.fromkeys(names))


def measure_profiles(bundle: Path, profiles: list[str], runs: int, generate_bytes: int,
                     progress=lambda msg: None) -> tuple[dict, str]:
    """`study` per profile in turn: one record (several profiles: {'benchmark': 'neat-bench-load-set',
    'profiles': [records]}) and its Markdown."""
    records = []
    for name in profiles:
        records.append(study(bundle, name, runs, generate_bytes, progress=lambda m, n=name: progress(f"{n}: {m}")))
    text = "\n".join(markdown(r) for r in records)
    if len(records) == 1:
        return records[0], text
    return {"benchmark": "neat-bench-load-set", "profiles": records}, text


def records_of(record: dict) -> list[dict]:
    """The per-profile records of a `neat bench --load` record (one profile or a set)."""
    return record["profiles"] if "profiles" in record else [record]


def bars(record: dict) -> list[dict]:
    """The issue's bars for the picked artifact at the default policy, each with its figure and verdict."""
    rows = [r for r in record["rows"] if r["threads"] is None]
    pick = next((r for r in rows if r["artifact"] == record["chosen"]), None)
    if pick is None:
        return [{"bar": "the pick was measured", "met": False, "figure": f"{record['chosen']} not among the rows"}]
    out = []
    if "gen_ratio" in pick:
        out.append({"bar": f"loaded generation >= {MIN_GEN_RATIO}x idle", "figure": pick["gen_ratio"],
                    "met": pick["gen_ratio"] >= MIN_GEN_RATIO})
        if "cpu_efficiency" in pick:
            out[-1]["detail"] = (f"its share of a core {pick['idle']['cpu_share']:.2f} idle, "
                                 f"{pick['loaded']['cpu_share']:.2f} loaded; bytes per CPU-second "
                                 f"{pick['cpu_efficiency']:.2f}x idle")
    out.append({"bar": f"loaded chunk p99 <= {MAX_P99_RATIO}x idle p99", "figure": pick["p99_ratio"],
                "met": pick["p99_ratio"] <= MAX_P99_RATIO})
    for cond in ("idle", "loaded"):
        speeds = [r[cond].get("bytes_per_s", 0.0) for r in record["rows"]]
        mine = pick[cond].get("bytes_per_s")
        if mine and max(speeds) > 0:
            share = mine / max(speeds)
            out.append({"bar": f"{cond}: pick within {PICK_WITHIN:.0%} of the fastest generation", "figure": share,
                        "met": share >= 1 - PICK_WITHIN})
    ids = {r[c].get("ids_sha256") for r in record["rows"] for c in ("idle", "loaded")} - {None}
    out.append({"bar": "argmax ids the same on every artifact, setting and load", "figure": len(ids),
                "met": len(ids) <= 1})
    return out


def markdown(record: dict) -> str:
    """The side-by-side table (idle | loaded) and the bars, as Markdown."""
    lines = [f"Load profile `{record['profile']}` ({', '.join(record['jobs'])}); load average "
             f"{_num(record['load_average']['before'])} before, {_num(record['load_average']['during'])} during; "
             f"{record['usable_cores']} usable cores; picked: `{record['chosen']}`; generation: "
             f"{record['generate_bytes']} held-out bytes stepped through after a "
             f"{record['prompt_bytes']}-byte prompt.", "",
             "| artifact | threads | chunk p50 idle / loaded ms | chunk p99 idle / loaded ms | generation idle / loaded "
             "bytes/s | loaded / idle generation | share of a core idle / loaded | bytes per CPU-s, loaded / idle |",
             "|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        i, b = r["idle"], r["loaded"]
        threads = r["threads"] or "policy ({chunk}/{step})".format(**record["policy"])
        lines.append(f"| {r['artifact']} | {threads} | {i['chunk_p50_ms']:.2f} / {b['chunk_p50_ms']:.2f} | "
                     f"{i['chunk_p99_ms']:.2f} / {b['chunk_p99_ms']:.2f} | {_num(i.get('bytes_per_s'), 0)} / "
                     f"{_num(b.get('bytes_per_s'), 0)} | {_num(r.get('gen_ratio'), 2)}x | {_num(i.get('cpu_share'), 2)} / "
                     f"{_num(b.get('cpu_share'), 2)} | {_num(r.get('cpu_efficiency'), 2)}x |")
    lines.append("")
    lines += [f"- {b['bar']}: {_num(b['figure'], 3)} ({'met' if b['met'] else 'MISSED'})"
              + (f"; {b['detail']}" if "detail" in b else "") for b in record["bars"]]
    return "\n".join(lines) + "\n"


def _num(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}" if isinstance(x, float) else str(x)


__all__ = ["study", "bars", "markdown", "jobs", "parse_profiles", "measure_profiles", "records_of"]
