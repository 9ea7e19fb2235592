"""Generation by decode steps against the recompute path, and issue 12's bars, in one process (`neat bench`
measures the same figures per artifact in its workers; this adds the memory bar):

    python -m benchmarks.stepping BUNDLE [--bytes 1024] [--keys cpu-fp32 onnx-fp32 ...] [--memory-bytes 65536]

For the eager reference and each artifact (default: the chosen one): time to first byte after a 1 KB held-out
prompt, per-byte latency p50/p99 and bytes/s over `--bytes` bytes of the held-out text that follows it (stepped
through: real text's patch mix), by stepping and by recomputing the partial chunk, each path's argmax ids
compared with the eager reference's recompute path. Then peak RSS of a
fresh process generating 1 KB and `--memory-bytes` by stepping through the chosen artifact. Torch runs one
thread (the per-byte graphs are tiny; on a shared 2-core machine a second thread mostly waits). Prints the
JSON record on the last line; compare only ratios from one run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

BARS = {"vs_recompute": 8.0, "vs_eager_step": 5.0, "memory_growth": 0.05}


def peak_rss(bundle: str, key: str, n: int) -> float:
    """MiB: peak RSS of a fresh process generating n bytes by stepping through `key` after a 1 KB prompt."""
    code = ("import resource, sys, torch; torch.set_num_threads(1); import runtimes; "
            "from runtimes.generate import stepped; from benchmarks.generation import prompt_ids; "
            f"s = runtimes.load({bundle!r}, backend={key!r}); "
            f"sum(1 for _ in stepped(s, prompt_ids(), {n}, lambda x: int(x.argmax()))); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(bundle: str, n: int, keys: list[str], memory_bytes: int) -> dict:
    import torch

    import runtimes
    from benchmarks.generation import continuation_ids, prompt_ids, summary, timed

    torch.set_num_threads(1)
    chosen = runtimes.load(bundle).backend.key
    keys = keys or [chosen]
    prompt = prompt_ids()
    follow = continuation_ids(n, len(prompt))
    rows = {}
    for key in ["eager", *[k for k in keys if k != "eager"]]:
        session = runtimes.load(bundle, backend=key)
        rows[key] = {p: timed(session, p, prompt, n, follow) for p in ("step", "recompute")}
    reference = rows["eager"]["recompute"]["ids"]
    rows = {key: {p: {**summary(r), "equal_to_reference": r["ids"] == reference} for p, r in paths.items()}
            for key, paths in rows.items()}
    main = rows.get(chosen, rows[keys[0]])
    small, large = peak_rss(bundle, chosen, 1024), peak_rss(bundle, chosen, memory_bytes)
    ratios = {"vs_recompute": main["step"]["bytes_per_s"] / main["recompute"]["bytes_per_s"],
              "vs_eager_step": main["step"]["bytes_per_s"] / rows["eager"]["step"]["bytes_per_s"],
              "memory_growth": large / small - 1.0}
    verdicts = {k: (v <= BARS[k]) if k == "memory_growth" else (v >= BARS[k]) for k, v in ratios.items()}
    verdicts["greedy_identical"] = all(r["equal_to_reference"] for p in rows.values() for r in p.values())
    return {"benchmark": "stepping", "bundle": bundle, "chosen": chosen, "bytes": n, "prompt_bytes": len(prompt),
            "rows": rows, "peak_rss_mib": {"1024": small, str(memory_bytes): large}, "ratios": ratios,
            "bars": BARS, "verdicts": verdicts}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--bytes", type=int, default=1024, help="held-out bytes stepped through per path (default 1024)")
    parser.add_argument("--keys", nargs="*", default=[], help="artifacts to measure (default: the chosen one)")
    parser.add_argument("--memory-bytes", type=int, default=65536, help="the long run of the memory bar")
    args = parser.parse_args(argv)
    record = run(args.bundle, args.bytes, args.keys, args.memory_bytes)
    for key, paths in record["rows"].items():
        for path, r in paths.items():
            print(f"{key:14s} {path:9s} TTFB {r['ttfb_ms']:7.1f} ms  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
                  f"  {r['bytes_per_s']:7.1f} bytes/s  same as reference: {r['equal_to_reference']}")
    print(f"peak RSS {record['peak_rss_mib']}; ratios {record['ratios']}; verdicts {record['verdicts']}")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
