"""Verdicts on a benchmark record: the speed targets it meets (`targets`) and its regressions against a
baseline record (`gate`). Pure functions of the records: nothing is measured here.
"""
from __future__ import annotations


def targets(record: dict) -> list[dict]:
    """The speed targets for the best CPU artifact (batch 1, one chunk, same run), each measured or None."""
    rows = {r["artifact"]: r for r in record["artifacts"]}
    on_cpu = [r for r in record["artifacts"] if r.get("roofline")]  # rows measured against the CPU's limits
    # mlx off a Mac is its CPU stand-in, measured beside the others but not the compiled CPU path the target means
    # torch.compile's row is the reference compiled in-process, what the artifacts are compared with, not one of them
    compiled = [r for r in on_cpu if not r["artifact"].startswith(("eager", "onnx", "mlx", "torch.compile"))]
    best = min(compiled, key=lambda r: r["p50_ms"], default=None)
    onnx = min((r for r in on_cpu if r["artifact"].startswith("onnx")), key=lambda r: r["p50_ms"],
               default=None)
    chosen = rows.get(record.get("chosen"), {})
    tc = record.get("torch_compile") or {}

    def item(name, measured, goal, unit):
        return {"target": name, "measured": measured, "goal": goal, "unit": unit,
                "met": None if measured is None else bool(measured < goal if unit == "s" else measured >= goal)}

    gen = chosen.get("generation") or {}
    stepping = [] if record.get("generation") is None else [
        item(f"generation through the chosen artifact ({record.get('chosen')}): stepping vs its recompute path",
             gen.get("step_vs_recompute"), 8.0, "x"),
        item("generation through the chosen artifact vs the eager reference's step path",
             gen.get("step_vs_eager_step"), 5.0, "x"),
    ]
    return [
        item(f"best compiled CPU artifact ({best['artifact'] if best else '-'}) vs eager", best and best["speedup_vs_eager"], 2.0, "x"),
        item("best compiled CPU artifact vs ONNX Runtime (CPU)", best and onnx and onnx["p50_ms"] / best["p50_ms"], 1.2, "x"),
        item(f"cold start of the chosen artifact ({record.get('chosen')})", chosen.get("cold_start_s"), 3.0, "s"),
        item("torch.compile first call / chosen cold start",
             tc.get("first_call_s") and chosen.get("cold_start_s") and tc["first_call_s"] / chosen["cold_start_s"],
             5.0, "x"),
        *stepping,
    ]


def gate(record: dict, baseline: dict, max_regression_pct: float) -> list[str]:
    """Regressions of `record` against `baseline`: speed ratios down by more than the allowance, parity
    worse (argmax agreement lower, or max abs error 10x higher), bits per byte on held-out text more than 1%
    higher (only when both records scored the same text), generation (short, or 1 KB by either path) no longer
    equal."""
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
        for path in ("step", "recompute"):
            was = (base.get("generation") or {}).get(path, {}).get("equal_to_reference")
            now = (row.get("generation") or {}).get(path, {}).get("equal_to_reference")
            if was and now is False:
                problems.append(f"{row['artifact']}: generation by {path} now differs from the reference (its ids: "
                                "the argmax at each byte)")
    missing = sorted(set(old) - {r["artifact"] for r in record["artifacts"]})
    problems += [f"{k}: in the baseline but not measured in this run" for k in missing]
    return problems
