"""Views of a benchmark record: `neat bench`'s terminal table and lines, Markdown, the JSON record, a plot.

The plot needs matplotlib (`pip install "neat-deploy[all]"`), imported only when a plot is asked for.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from rich.table import Table


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
        return "torch.compile first call: not measured (--no-cold-start or --no-torch-compile)"
    if tc["first_call_s"] is None:
        return f"torch.compile first call: failed ({tc['error']})"
    warm = tc.get("warm_cache_first_call_s")
    return (f"torch.compile first call in a fresh process: {tc['first_call_s']:.1f} s with an empty compile cache, "
            + (f"{warm:.1f} s with a warm one" if warm is not None else "with a warm one not measured"))


GENERATION_COLUMNS = ("artifact", "TTFB ms", "step p50 ms", "step p99 ms", "step bytes/s", "recompute bytes/s",
                      "vs recompute", "vs eager step", "% of byte limit", "ids as eager")


def _ratio(x) -> str:
    return f"{x:.1f}x" if x is not None else "-"


def generation_cells(row: dict) -> list[str] | None:
    """One artifact's generation cells (GENERATION_COLUMNS), None when the record has none."""
    g = row.get("generation")
    if not g:
        return None
    step, rec = g.get("step", {}), g["recompute"]
    fast = step if "bytes_per_s" in step else rec
    same = [p for p in ("step", "recompute") if "equal_to_reference" in g.get(p, {})]
    greedy = "same" if all(g[p]["equal_to_reference"] for p in same) else \
        "differs (" + ", ".join(p for p in same if not g[p]["equal_to_reference"]) + ")"
    return [row["artifact"], f"{fast['ttfb_ms']:.0f}", f"{step['p50_ms']:.2f}" if step.get("p50_ms") else "-",
            f"{step['p99_ms']:.2f}" if step.get("p99_ms") else "-",
            f"{step['bytes_per_s']:,.0f}" if step.get("bytes_per_s") else "recomputes",
            f"{rec['bytes_per_s']:,.0f}", _ratio(g.get("step_vs_recompute")), _ratio(g.get("step_vs_eager_step")),
            f"{g['roofline']['limit_fraction']:.1%}" if g.get("roofline") else "-", greedy]


def generation_line(record: dict) -> str:
    g, w = record.get("generation"), record.get("work_per_generated_byte")
    if not g:
        return "generation: not measured (--generate-bytes 0)"
    what = (f"{g['bytes']} bytes of the held-out prose that follows a {g['prompt_bytes']}-byte held-out prompt, "
            "stepped through (real text's mix of patch starts; ids: the model's argmax at each byte)"
            if g.get("text") == "held-out"
            else f"{g['bytes']} greedy bytes after a {g['prompt_bytes']}-byte held-out prompt")
    line = (f"generation: {what}, by decode steps and by recomputing the partial chunk, torch {g['threads']} thread, "
            "artifacts taking turns")
    if w:
        line += (f"; one stepped byte is {w['flops'] / 1e6:.2f} MFLOP and moves at least {w['bytes']['fp32'] / 1e6:.2f} MB "
                 f"at fp32 (counted on the eager reference over {w['steps']} bytes: {w['full_steps']} full steps, "
                 f"{w['light_steps']} light)")
    return line


COLUMNS = ("artifact", "p50 ms", "p99 ms", "vs eager", "% of limit", "bytes/s", "cold start", "max err", "argmax",
           "bits/byte", "greedy")


def cells(r: dict) -> list[str]:
    """One artifact's row of `neat bench`'s table (COLUMNS)."""
    return [r["artifact"], f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['speedup_vs_eager']:.2f}x",
            limit_cell(r), f"{r['throughput_bytes_s']['1']:,.0f}",
            f"{r['cold_start_s']:.2f}s" if r["cold_start_s"] is not None else "-",
            f"{r['parity']['max_abs']:.1e}", f"{r['parity']['argmax']:.1%}", f"{r['bits_per_byte']:.3f}",
            "same" if r["generation_equal"] else f"differs at {r['generation_first_difference']}"]


def _markdown_table(columns, rows) -> str:
    return "\n".join(["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|",
                      *("| " + " | ".join(row) + " |" for row in rows)]) + "\n"


LOAD_COLUMNS = ("load", "load avg", "policy: generation idle → loaded", "chunk p99 idle → loaded",
                "share of a core idle → loaded (bytes per CPU-s)", "{n} threads: generation idle → loaded",
                "chunk p99 idle → loaded")


def _idle_loaded(row: dict, key: str, fmt: str, ratio: str, bar: float | None, above: bool) -> str:
    idle, loaded = row["idle"][key], row["loaded"][key]
    r = loaded / idle
    mark = "" if bar is None else (" met" if (r >= bar if above else r <= bar) else " missed")
    return f"{fmt.format(idle)} → {fmt.format(loaded)} ({ratio.format(r)}{mark})"


def _share(row: dict) -> str:
    """The share of a core the worker got generating, idle and loaded, and its bytes per CPU-second loaded
    over idle (older records have no shares: "-")."""
    if "cpu_efficiency" not in row:
        return "-"
    return f"{row['idle']['cpu_share']:.2f} → {row['loaded']['cpu_share']:.2f} ({row['cpu_efficiency']:.2f}x)"


def load_table(records: list[dict]) -> str:
    """`neat bench --load` records (one per profile) as one table: the picked artifact at the thread policy and
    at one thread per usable core, generation and chunk p99 idle and loaded, with the bars (issue 33)."""
    from benchmarks.loaded import MAX_P99_RATIO, MIN_GEN_RATIO

    n = records[0]["usable_cores"]
    rows = []
    for rec in records:
        mine = {r["threads"]: r for r in rec["rows"] if r["artifact"] == rec["chosen"]}
        policy, full = mine[None], mine.get(n)
        cells = [f"`{rec['profile']}`", f"{rec['load_average']['during']:.1f}",
                 _idle_loaded(policy, "bytes_per_s", "{:,.0f} B/s", "{:.2f}x", MIN_GEN_RATIO, True),
                 _idle_loaded(policy, "chunk_p99_ms", "{:.1f} ms", "{:.1f}x", MAX_P99_RATIO, False),
                 _share(policy)]
        cells += [_idle_loaded(full, "bytes_per_s", "{:,.0f} B/s", "{:.2f}x", None, True),
                  _idle_loaded(full, "chunk_p99_ms", "{:.1f} ms", "{:.1f}x", None, False)] if full else ["-", "-"]
        rows.append(cells)
    return _markdown_table([c.format(n=n) for c in LOAD_COLUMNS], rows)


def readme_table(record: dict, kind: str = "table") -> str:
    """A table of `neat bench` as the README shows it, in Markdown with the terminal's columns and cells:
    kind "table" (COLUMNS) or "generation table" (GENERATION_COLUMNS)."""
    if kind == "generation table":
        return _markdown_table(GENERATION_COLUMNS, [generation_cells(r) for r in record["artifacts"]])
    return _markdown_table(COLUMNS, [cells(r) for r in record["artifacts"]])


README_TABLE = re.compile(r"(<!-- neat bench (table|generation table|load table) from (\S+), by "
                          r"benchmarks\.report\.update_readme -->\n)(.*?)(<!-- end of the table -->)", re.S)


def update_readme(readme: Path, root: Path | None = None) -> str:
    """The README's text with every marked table rendered again from the record its marker names (a path
    relative to `root`, default the README's directory); writes nothing."""
    root = root or readme.parent

    def render(m) -> str:
        records = [json.loads((root / path).read_text()) for path in m[3].split(",")]  # load tables: several
        if m[2] == "load table":
            from benchmarks.loaded import records_of

            return m[1] + load_table([r for rec in records for r in records_of(rec)]) + m[5]
        return m[1] + readme_table(records[0], m[2]) + m[5]

    return README_TABLE.sub(render, readme.read_text())


def terminal(record: dict, bundle: Path) -> list:
    """What `neat bench` prints: a table row per artifact, the machine limits, the generation table and its
    line (when measured), torch.compile's first call, the chosen artifact and the speed targets."""
    table = Table(title=f"neat bench {bundle} ({record['profile']['cpu']})")
    for col in COLUMNS:
        table.add_column(col)
    for r in record["artifacts"]:
        table.add_row(*cells(r))
    out = [table, limits_line(record)]
    if record.get("generation"):
        gen = Table(title="generation, batch 1")
        for col in GENERATION_COLUMNS:
            gen.add_column(col)
        for r in record["artifacts"]:
            gen.add_row(*generation_cells(r))
        out.append(gen)
    return [*out, generation_line(record), compile_line(record), f"chosen artifact here: {record['chosen']}",
            *target_lines(record)]


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
    if record.get("generation"):
        lines += ["", "| " + " | ".join(GENERATION_COLUMNS) + " |", "|---" * len(GENERATION_COLUMNS) + "|"]
        lines += ["| " + " | ".join(generation_cells(r)) + " |" for r in record["artifacts"]]
    lines += ["", limits_line(record) + ".", "", generation_line(record) + ".", "", compile_line(record) + ".", "",
              f"Chosen artifact on this machine: {record['chosen']}.", ""]
    lines += [f"- {line}" for line in target_lines(record)]
    return "\n".join(lines) + "\n"


def save_json(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def save_markdown(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(record))


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


if __name__ == "__main__":  # python -m benchmarks.report README.md: rewrite its tables from their records
    import sys

    for name in sys.argv[1:] or ["README.md"]:
        Path(name).write_text(update_readme(Path(name)))
