"""Tables for the `neat` command's reports: views of the JSON-ready dicts the library returns."""
from __future__ import annotations

from rich.table import Table

CONDITION_LABELS = {
    "carried": "NEAT, state carried",
    "reset_every_chunk": "  state reset every chunk",
    "memory_off": "  memory output off",
    "memory_reset_every_chunk": "  memory reset every chunk",
    "z_zero": "  Transformer² off (Z = 0)",
}
BASELINE_LABELS = {"unigram": "unigram (training text)", "ngram": "6-gram count model (training text)",
                   "plain": "plain byte transformer (same size, budget)"}


def _cell(value: float | None, ref: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if ref is None else f"{value:.3f} ({value / ref - 1:+.1%})"


def eval_tables(r: dict) -> list[Table]:
    """`neat eval`'s report as three tables: bits per byte by mechanism and baseline, the other figures, bars."""
    carried = r["conditions"]["carried"]
    bits = Table(title=f"NEAT {r['model']}: held-out streams of {r['stream_bytes']} bytes, "
                       f"{r['streams_per_task']} per task (bits per byte; grid: per token; vs carried)")
    for col in ("configuration", "prose", "code", "grid", "text mean"):
        bits.add_column(col, justify="left" if col == "configuration" else "right")
    text = lambda by: (by["prose"] + by["code"]) / 2  # noqa: E731
    for name, by in r["conditions"].items():
        label = CONDITION_LABELS.get(name, "  expert forced: " + name.removeprefix("expert_"))
        ref = None if name == "carried" else carried
        bits.add_row(label, *(_cell(by[t], ref and ref[t]) for t in ("prose", "code", "grid")),
                     _cell(text(by), ref and text(ref)))
    for name, by in r["baselines"].items():
        bits.add_row(BASELINE_LABELS[name], *(_cell(by.get(t), by.get(t) and carried[t]) for t in ("prose", "code", "grid")),
                     _cell(by["text"], text(carried)))

    other = Table(title="images, dispatch, patching, bounds")
    for col in ("figure", "NEAT", "baseline", "baseline is"):
        other.add_column(col)
    acc, maj = r["image_accuracy"], f"{r['image_majority_accuracy']:.1%}"
    other.add_row("image-token accuracy, map in the same chunk", f"{acc['same']:.1%}", maj, "most frequent code")
    other.add_row("image-token accuracy, map in the previous chunk", f"{acc['previous']:.1%}", maj, "most frequent code")
    other.add_row("dispatch accuracy (one chunk)", f"{r['dispatch_accuracy']:.1%}",
                  f"{r['dispatch_majority_accuracy']:.1%}", "majority class")
    other.add_row("mean patch length (bytes)", f"{r['mean_patch_bytes']:.2f}", "", "")
    other.add_row("max |state| / bound over the streams", f"{r['max_state_over_bound']:.3f}",
                  "", "finite" if r["finite"] else "NOT FINITE")

    bars = Table(title="bars (NEAT v2 issue)")
    for col in ("bar", "value", "met"):
        bars.add_column(col)
    for b in r["bars"]:  # accuracies as percentages, bounds as ratios, the rest as relative changes
        value = (f"{b['value']:.1%}" if "accuracy" in b["bar"] else
                 f"{b['value']:.3f}" if "bound" in b["bar"] else f"{b['value']:+.1%}")
        bars.add_row(b["bar"], value, "[green]met[/green]" if b["met"] else "[red]MISSED[/red]")
    return [bits, other, bars]
