"""Tables and lines for the `neat` command's reports: views of what the library returns (JSON-ready dicts,
exporter outcomes, the hardware profile and ranking), and `show`, which prints them on standard output."""
from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.table import Table

from neat.eval_bars import trained as train_record

VERDICT_COLOURS = {"passed": "green", "failed": "red", "error": "red"}
CONDITION_LABELS = {
    "carried": "NEAT, state carried",
    "reset_every_chunk": "  state reset every chunk",
    "memory_off": "  memory output off",
    "memory_reset_every_chunk": "  memory reset every chunk",
    "z_zero": "  Transformer² off (Z = 0)",
}
BASELINE_LABELS = {"unigram": "unigram (training text)", "ngram": "6-gram count model (training text)",
                   "plain": "plain byte transformer (same size, budget)",
                   "plain_equal_flops": "plain byte transformer (NEAT's FLOPs per byte)"}


def _cell(value: float | None, ref: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if ref is None else f"{value:.3f} ({value / ref - 1:+.1%})"


def eval_tables(r: dict) -> list[Table]:
    """`neat eval`'s report as three tables: bits per byte by mechanism and baseline, the other figures, bars."""
    carried = r["conditions"]["carried"]
    bits = Table(title=f"NEAT {r['model']}: held-out streams of {r['stream_bytes']} bytes, "
                       f"{r['streams_per_task']} per task (bits per byte; grid: per token; vs carried)")
    tasks = [t for t in ("prose", "code", "grid", "recall", "recall_values") if t in carried]
    for col in ("configuration", *tasks, "text mean", "MFLOP/byte", "trained"):
        bits.add_column(col.replace("_", " "), justify="left" if col == "configuration" else "right")
    text = lambda by: (by["prose"] + by["code"]) / 2  # noqa: E731
    mflop = lambda by: f"{by['flops_per_byte'] / 1e6:.2f}" if "flops_per_byte" in by else ""  # noqa: E731
    trained = lambda by: train_record(by, sep=" / ")  # noqa: E731
    for name, by in r["conditions"].items():
        label = CONDITION_LABELS.get(name, "  expert forced: " + name.removeprefix("expert_"))
        ref = None if name == "carried" else carried
        bits.add_row(label, *(_cell(by[t], ref and ref[t]) for t in tasks),
                     _cell(text(by), ref and text(ref)), *((mflop(r), trained(r)) if name == "carried" else ("", "")))
    for name, why in r.get("skipped_conditions", {}).items():  # a mechanism the model was configured without
        bits.add_row(CONDITION_LABELS.get(name, "  expert forced: " + name.removeprefix("expert_")),
                     *(why if i == 0 else "" for i in range(len(tasks))), "", "", "")
    for name, by in r["baselines"].items():
        bits.add_row(BASELINE_LABELS.get(name, name), *(_cell(by.get(t), by.get(t) and carried[t]) for t in tasks),
                     _cell(by["text"], text(carried)), mflop(by), trained(by))

    other = Table(title="images, dispatch, patching, bounds")
    for col in ("figure", "NEAT", "baseline", "baseline is"):
        other.add_column(col)
    acc, maj = r["image_accuracy"], f"{r['image_majority_accuracy']:.1%}"
    other.add_row("image-token accuracy, map in the same chunk", f"{acc['same']:.1%}", maj, "most frequent code")
    other.add_row("image-token accuracy, map in the previous chunk", f"{acc['previous']:.1%}", maj, "most frequent code")
    if r["dispatch_accuracy"] is None:
        other.add_row("dispatch accuracy (one chunk)", "no experts", "", "")
    else:
        other.add_row("dispatch accuracy (one chunk)", f"{r['dispatch_accuracy']:.1%}",
                      f"{r['dispatch_majority_accuracy']:.1%}", "majority class")
    other.add_row("mean patch length (bytes)", f"{r['mean_patch_bytes']:.2f}", "", "")
    other.add_row("max |state| / bound over the streams", f"{r['max_state_over_bound']:.3f}",
                  "", "finite" if r["finite"] else "NOT FINITE")

    bars = Table(title="bars (NEAT v2 issue)")
    for col in ("bar", "value", "met"):
        bars.add_column(col)
    for b in r["bars"]:  # accuracies as percentages, bounds as ratios, the rest as relative changes
        value = (b.get("note", "-") if b["value"] is None else f"{b['value']:.1%}" if "accuracy" in b["bar"] else
                 f"{b['value']:.3f}" if "bound" in b["bar"] else f"{b['value']:+.1%}")
        bars.add_row(b["bar"], value, "[green]met[/green]" if b["met"] else "[red]MISSED[/red]")
    return [bits, other, bars]


def console() -> Console:
    """Standard output for tables: the terminal's width, or 160 columns in logs (CI), where rich would
    squeeze a wide table into 80."""
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160) if wide else Console()


def show(items: list) -> None:
    """Print tables and lines on standard output, the lines as written (numbers not highlighted)."""
    out = console()
    for item in items:
        out.print(item, highlight=False)


def outcomes_view(title: str, outcomes) -> list:
    """`neat export` and `neat verify`: a table of the exporter outcomes, then each outcome's message."""
    table = Table(title=title)
    for col in ("target", "precision", "size", "build", "max err", "cosine", "argmax", "state err", "verdict"):
        table.add_column(col, justify="right" if col in ("size", "build") else "left")
    for o in outcomes:
        w = o.worst or {}
        state = [m["error"] for n, m in w.get("tensors", {}).items() if n.startswith("new_") and "error" in m]
        table.add_row(
            o.target, o.precision, f"{o.size / 2**20:.1f} MiB" if o.size else "-",
            f"{o.build_seconds:.0f}s" if o.build_seconds else "-",
            f"{w['max_abs']:.1e}" if "max_abs" in w else "-", f"{w['cosine']:.5f}" if "cosine" in w else "-",
            f"{w['argmax']:.1%}" if "argmax" in w else "-", f"{max(state):.1e}" if state else "-",
            f"[{VERDICT_COLOURS.get(o.verdict, 'yellow')}]{o.verdict}[/]",
        )
    return [table] + [f"[bold]{o.key}[/bold]: {o.message}" for o in outcomes if o.message]


def verify_lines(manifest, outcomes, reference: bool) -> list[str]:
    """`neat verify`: what was checked, in words: the manifest's schema, every file's sha256 (how many, whether
    all matched), and per artifact its verdict and how it was verified. `reference`: the reference weights'
    sha256 was checked too (the bundle carries them)."""
    hashed = sum(o.files_checked for o in outcomes)
    damaged = [o.key for o in outcomes if o.message.startswith("integrity: ")]
    extra = " and the reference weights" if reference else ""
    files = (f"sha256: {hashed + reference} files ({hashed} in {len(outcomes)} artifact(s){extra}): "
             + (f"{', '.join(damaged)} differ from the manifest (below)" if damaged else "all match the manifest"))
    out = [f"manifest: valid, schema {manifest.schema} version {manifest.schema_version}, "
           f"{len(manifest.artifacts)} artifact(s)", files]
    for o in outcomes:
        how = o.method or ("files checked, not run here" if o.files_checked else "files differ, not run")
        out.append(f"{o.key}: {o.verdict} ({how})")
    return out


def info_view(p, bundle, ranking, chosen) -> list:
    """`neat info`: the hardware profile `p` and, for a bundle, its ranking with the `chosen` candidate marked."""
    gpus = ", ".join(f"{d.name} (compute capability {d.compute_capability})" for d in p.cuda) or "none"
    libs = {k: v for k, v in p.libraries.items() if k != "onnxruntime_providers"}
    out = [f"[bold]{p.os} {p.os_version} {p.arch}[/bold]  {p.cpu}, {p.cores} cores, "
           f"{p.memory_bytes / 2**30:.1f} GiB, ISA {' '.join(p.isa) or '-'}",
           f"NVIDIA GPUs: {gpus}; Apple Silicon: {'yes' if p.apple_silicon else 'no'}",
           "runtime libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items())]
    if not bundle:
        return out
    table = Table(title=f"{bundle}: preference order for a {p.kind} machine")
    for col in ("", "artifact", "usable", "why"):
        table.add_column(col)
    for c in ranking:
        usable = "[green]yes[/]" if c.usable and c.preferred else "[yellow]if asked[/]" if c.usable else "[red]no[/]"
        table.add_row("→" if chosen is c else "", c.key, usable, c.reason)
    return out + [table]


def generation_table(rows: list[dict], max_bytes: int) -> Table:
    """`neat run --compare`: where each artifact's greedy text first differs from the eager reference."""
    table = Table(title=f"greedy generation of {max_bytes} bytes vs the eager reference")
    for col in ("artifact", "first difference", "text"):
        table.add_column(col)
    for r in rows:
        where = "identical" if r["first_difference"] is None else f"byte {r['first_difference']}"
        table.add_row(r["key"], r["error"] or where, repr(r["text"][:60]))
    return table


def generation_speed(n: int, start: float, first: float | None, end: float, decoding: str) -> str:
    """'generated N bytes in S s: B bytes/s after the first (first byte after F ms; decoding: step)'."""
    if not n or first is None:
        return f"generated nothing in {end - start:.2f} s (decoding: {decoding})"
    rate = f"{(n - 1) / (end - first):.0f} bytes/s after the first" if n > 1 and end > first else "one byte"
    return (f"generated {n} bytes in {end - start:.2f} s: {rate} (first byte after {(first - start) * 1e3:.0f} ms, "
            f"prompt included; decoding: {decoding})")


def image_note(path, image, tokens: dict) -> tuple[str, bool]:
    """`neat run`'s line for a saved image (its path, its cells), and whether every cell is alike (uniform)."""
    from runtimes.images import distinct_cells

    cells, distinct = distinct_cells(image, tokens["patch_px"])
    if distinct > 1:
        return f"[image saved: {path} ({cells} cells, {distinct} kinds)]", False
    return (f"[image saved: {path} (uniform: all {cells} cells alike, as in an empty map, every cell '.', which "
            "draws as one flat dark grey)]"), True


def images_note(saved: int, uniform: int, tokens: dict) -> str:
    """`neat run`'s closing line on images ('' when none was uniform)."""
    if not uniform:
        return ""
    return (f"{uniform} of {saved} images are uniform. Not a fault of the decoding: after the image a prompt asks "
            "for, the model goes on writing examples in its training format (\"look:\" with an image it invents, "
            "then that image's map, \"draw:\" ...), and the maps it invents are mostly empty. "
            f"--max-bytes {tokens['image_grid'] ** 2 + 2} after a \"draw: \" prompt stops after the first image "
            "(its start token, cells and end token).")
