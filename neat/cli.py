"""The `neat` command. Thin: each command parses options, calls one library function, prints the result."""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from neat import __version__
from neat.errors import NeatError

DEFAULT_BUNDLE = Path("neat-bundle")


def _user_errors() -> tuple[type[Exception], ...]:
    """Every library error that is the user's to fix; printed as one paragraph."""
    from exporters.errors import ExportError
    from runtimes.errors import RuntimeLayerError

    return (NeatError, ExportError, RuntimeLayerError)


class NeatGroup(click.Group):
    """Turns library errors into one readable paragraph; --debug shows the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _user_errors() as exc:
            if ctx.params.get("debug"):
                traceback.print_exc()
            raise click.ClickException(str(exc)) from None


@click.group(cls=NeatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="neat")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def main(debug: bool) -> None:
    """NEAT Deploy: export the NEAT model once to CoreML, TensorRT, ONNX and AOTInductor, verified
    against the PyTorch reference, then pick and run the right artifact for each machine."""
    import warnings

    # torch's own deprecation notices while exporting; nothing a user of this tool can act on
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("runs/tiny.safetensors"),
              show_default=True, help="Where to write the checkpoint (.safetensors).")
@click.option("--preset", default="tiny", show_default=True, help="Model size: tiny or small.")
@click.option("--arch", type=click.Choice(["neat", "plain"]), default="neat", show_default=True,
              help="neat, or plain: the baseline causal byte transformer of the same size and budget.")
@click.option("--seed", default=0, show_default=True, help="Seed for data sampling and initialisation.")
@click.option("--entropy-steps", type=int, help="Stage 1 steps (entropy model).")
@click.option("--base-steps", type=int, help="Stage 2 steps (base model).")
@click.option("--expert-steps", type=int, help="Stage 3 steps (Transformer² experts).")
@click.option("--batch", type=int, help="Streams per step.")
@click.option("--chunks", type=int, help="Chunks per step and stream (the truncated back-propagation window).")
@click.option("--threads", type=int, help="torch CPU threads (default: torch's own choice).")
def train(out: Path, preset: str, arch: str, seed: int, **overrides) -> None:
    """Train a NEAT model (or the plain baseline) from scratch and save a checkpoint.

    Data is built on this machine: standard-library prose and code, and generated grid-world images,
    read as persistent 4 KB streams with the state carried between steps. The defaults train the shipped
    checkpoints (see the README for how long that took)."""
    from neat.progress import rich_reporter
    from neat.train import TrainSettings, train as run_training
    from neat.checkpoint import save_checkpoint

    settings = TrainSettings(preset=preset, arch=arch, seed=seed, **{k: v for k, v in overrides.items() if v is not None})
    with rich_reporter() as report:
        model, info = run_training(settings, report)
    save_checkpoint(model, out, info)
    click.echo(f"saved {out} ({info['train_seconds']} s)")


@main.command("eval")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plain", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint of the plain-transformer baseline (default: the shipped one; see `neat train --arch plain`).")
@click.option("--chunks", default=64, show_default=True, type=click.IntRange(2),
              help="Chunks (of 128 bytes) per held-out stream; the state is carried across them.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def eval_command(checkpoint: Path | None, plain: Path | None, chunks: int, as_json: bool) -> None:
    """Score a checkpoint on long held-out streams (default: the shipped tiny model), about 5 minutes.

    Bits per byte with the state carried, and with each mechanism taken away (state reset every chunk,
    memory off, memory reset, Transformer² off, each expert forced); image-token accuracy with the map in
    the same and in the previous chunk; beside a unigram, a 6-gram count model and a plain transformer of
    the same size and training budget, all computed in this run; then the bars each figure must meet."""
    from neat.checkpoint import SHIPPED_PLAIN, load_checkpoint
    from neat.evaluate import evaluate

    plain = plain or (SHIPPED_PLAIN if SHIPPED_PLAIN.is_file() else None)
    with _status(f"evaluating on held-out streams of {chunks} chunks"):
        report = evaluate(load_checkpoint(checkpoint), load_checkpoint(plain) if plain else None, chunks)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from neat.report import eval_tables

    for table in eval_tables(report):
        _console().print(table)


def _parse_batch(value: str) -> tuple[int, int]:
    try:
        lo, _, hi = value.partition(":")
        bounds = (int(lo), int(hi or lo))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not MIN:MAX (e.g. 1:4) or N") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise click.BadParameter(f"{value!r}: need 1 <= MIN <= MAX")
    return bounds


def _outcome_table(title: str, outcomes) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("target", "precision", "size", "build", "max err", "cosine", "argmax", "state err", "verdict"):
        table.add_column(col, justify="right" if col in ("size", "build") else "left")
    colours = {"passed": "green", "failed": "red", "error": "red"}
    for o in outcomes:
        w = o.worst or {}
        state = [m["error"] for n, m in w.get("tensors", {}).items() if n.startswith("new_") and "error" in m]
        table.add_row(
            o.target, o.precision, f"{o.size / 2**20:.1f} MiB" if o.size else "-",
            f"{o.build_seconds:.0f}s" if o.build_seconds else "-",
            f"{w['max_abs']:.1e}" if "max_abs" in w else "-", f"{w['cosine']:.5f}" if "cosine" in w else "-",
            f"{w['argmax']:.1%}" if "argmax" in w else "-", f"{max(state):.1e}" if state else "-",
            f"[{colours.get(o.verdict, 'yellow')}]{o.verdict}[/]",
        )
    console = _console()
    console.print(table)
    for o in outcomes:
        if o.message:
            console.print(f"[bold]{o.key}[/bold]: {o.message}", highlight=False)


def _fail_on(outcomes, out: Path) -> None:
    bad = [o for o in outcomes if not o.ok]
    if bad:
        names = ", ".join(f"{o.key} ({o.message})" for o in bad)
        raise click.ClickException(f"{len(bad)} artifact(s) failed in {out}: {names}")


@main.command("export")
@click.argument("targets", nargs=-1, required=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to export (default: the shipped tiny model).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BUNDLE, show_default=True,
              help="Bundle directory; other artifacts already in it are kept.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="fp16: a graph in half precision; int8: weights quantized to 8 bits.")
@click.option("--batch", default="1:4", show_default=True, help="Batch bounds MIN:MAX (dynamic dimension), or N.")
@click.option("--coreml-target", help="CoreML minimum deployment target, e.g. iOS17, macOS14, iOS18.")
@click.option("--compute-units", type=click.Choice(["all", "cpu_only", "cpu_and_gpu", "cpu_and_ne"]),
              help="CoreML compute units.")
@click.option("--coreml-state", is_flag=True, default=None,
              help="CoreML: carry the float state (Titans memory etc.) as CoreML state instead of explicit "
                   "inputs/outputs. Needs --precision fp16, a fixed --batch and --coreml-target iOS18.")
@click.option("--compute-capability", "compute_capabilities", multiple=True,
              help="TensorRT for RTX without a GPU: build for these compute capabilities, e.g. 8.6 (repeatable).")
@click.option("--max-autotune", is_flag=True, default=None, help="AOTInductor: benchmark kernel choices (slow build; on CPU "
              "with torch 2.13 Inductor's C++ GEMM templates fail on NEAT, see benchmarks/NOTES.md).")
def export_command(targets, checkpoint, out, precision, batch, **options) -> None:
    """Export a checkpoint to one or more TARGETS and verify every artifact against the reference.

    TARGETS: exported, onnx, tensorrt, coreml, cpu, cuda, or all (every target this machine can
    build). Each artifact is compared with the eager model, every output and every state tensor, on
    example and random inputs at the batch bounds, held-out text and a 64-chunk (8 KB) stream with the
    state carried; one that fails is not written and the command exits non-zero."""
    from exporters.build import export_bundle
    from neat.export_spec import neat_spec
    from neat.progress import timed_step

    spec = neat_spec(checkpoint, batch=_parse_batch(batch))
    outcomes = export_bundle(spec, list(targets), out, precision, options, step=timed_step)
    _outcome_table(f"{spec.name} -> {out}", outcomes)
    _fail_on(outcomes, out)


@main.command("verify")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BUNDLE)
def verify_command(bundle: Path) -> None:
    """Recheck a bundle: every file against its sha256, then every verification this machine can run."""
    from exporters.build import verify_bundle
    from neat.export_spec import neat_spec
    from neat.progress import timed_step
    from runtimes.bundle import read_manifest, reference_path
    from runtimes.errors import BundleError

    manifest = read_manifest(bundle)
    weights = reference_path(bundle, manifest)
    if weights is None:
        raise BundleError(f"{bundle} carries no reference weights, so its artifacts cannot be re-verified")
    dyn = manifest.signature.get("dynamic", {}).get("batch", {"min": 1, "max": 1})
    spec = neat_spec(weights, batch=(dyn["min"], dyn["max"]))
    outcomes = verify_bundle(bundle, spec, step=timed_step)
    _outcome_table(f"verify {bundle}", outcomes)
    _fail_on(outcomes, bundle)


@main.command("info")
@click.argument("bundle", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the profile and ranking as JSON.")
def info_command(bundle: Path | None, as_json: bool) -> None:
    """Show this machine's hardware profile and, for a BUNDLE, which artifact would run here and why
    each other one would or would not."""
    from runtimes.bundle import read_manifest
    from runtimes.profile import detect
    from runtimes.select import rank

    profile = detect()
    ranking = rank(read_manifest(bundle), profile, bundle) if bundle else []
    chosen = next((c for c in ranking if c.usable and c.preferred), None)
    if as_json:
        click.echo(json.dumps({"profile": profile.to_dict(), "chosen": chosen.key if chosen else None,
                               "ranking": [c.__dict__ for c in ranking]}, indent=2))
        return
    from rich.table import Table

    console = _console()
    p = profile
    console.print(f"[bold]{p.os} {p.os_version} {p.arch}[/bold]  {p.cpu}, {p.cores} cores, "
                  f"{p.memory_bytes / 2**30:.1f} GiB, ISA {' '.join(p.isa) or '-'}", highlight=False)
    gpus = ", ".join(f"{d.name} (compute capability {d.compute_capability})" for d in p.cuda) or "none"
    console.print(f"NVIDIA GPUs: {gpus}; Apple Silicon: {'yes' if p.apple_silicon else 'no'}", highlight=False)
    libs = {k: v for k, v in p.libraries.items() if k != "onnxruntime_providers"}
    console.print("runtime libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()), highlight=False)
    if not bundle:
        return
    table = Table(title=f"{bundle}: preference order for a {p.kind} machine")
    for col in ("", "artifact", "usable", "why"):
        table.add_column(col)
    for c in ranking:
        mark = "→" if chosen is c else ""
        usable = "[green]yes[/]" if c.usable and c.preferred else "[yellow]if asked[/]" if c.usable else "[red]no[/]"
        table.add_row(mark, c.key, usable, c.reason)
    console.print(table)


@main.command("run")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BUNDLE)
@click.option("--prompt", required=True, help="Text to continue.")
@click.option("--max-bytes", default=200, show_default=True, help="Bytes to generate at most.")
@click.option("--backend", help="Force an artifact (e.g. onnx-fp32), a target (onnx) or eager.")
@click.option("--temperature", default=0.0, show_default=True, help="0 is greedy.")
@click.option("--top-k", default=0, show_default=True, help="Sample from the k most likely tokens (0: all).")
@click.option("--seed", default=0, show_default=True)
@click.option("--autotune", is_flag=True, help="Time every usable artifact once and use the fastest.")
@click.option("--compare", is_flag=True,
              help="Generate greedily through every artifact that runs here and report where each first "
                   "differs from the eager reference (fp16 and int8 artifacts may).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=Path("neat-images"),
              show_default=True, help="Where generated images are saved as PNG.")
def run_command(bundle, prompt, max_bytes, backend, temperature, top_k, seed, autotune, compare, images) -> None:
    """Generate text from a bundle with the best artifact for this machine, streamed to stdout.
    The backend used is reported on stderr; generated images are saved as PNG and their paths printed."""
    import sys as _sys

    import runtimes
    from runtimes.images import save_png

    if compare:
        _compare_generation(bundle, prompt.encode(), max_bytes)
        return

    session = runtimes.load(bundle, backend=backend, autotune=autotune)
    click.echo(f"backend: {session.backend}", err=True)
    saved = []

    def on_image(img):
        saved.append(save_png(images / f"image-{len(saved) + 1}.png", img))
        click.echo(f"\n[image saved: {saved[-1]}]", err=True)

    out = _sys.stdout.buffer
    for piece in session.stream(prompt.encode(), max_bytes, temperature, top_k, seed, on_image=on_image):
        out.write(piece)
        out.flush()
    out.write(b"\n")
    out.flush()


@main.command("bench")
@click.argument("bundle", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1),
              help="Timed runs per artifact at batch 1 after warm-up (rounded up to a multiple of the 10 rounds).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the full record.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path), help="Write a Markdown table.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG: latency and speed ratio per artifact (matplotlib).")
@click.option("--baseline", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A stored --json record: exit non-zero on a regression against it.")
@click.option("--max-regression", default=10.0, show_default=True,
              help="Allowed drop of an artifact's speed ratio to eager, in percent, before --baseline fails.")
@click.option("--no-cold-start", is_flag=True,
              help="Skip the fresh-process measurements: each artifact's cold start and torch.compile's first "
                   "call (about a minute on a small CPU).")
def bench_command(bundle, runs, json_out, md_out, plot_out, baseline, max_regression, no_cold_start) -> None:
    """Measure the eager reference and every artifact of BUNDLE that runs here, in one run: parity,
    bits per byte on held-out text, greedy generation equality, load and cold-start time, latency
    percentiles, throughput, peak memory, speed as a ratio to eager, the share of this machine's measured
    limit (matmul rate, memory bandwidth) each reaches, and torch.compile's first call for comparison.
    With no BUNDLE, the default bundle (exported first if it does not exist)."""
    from rich.console import Console
    from rich.table import Table

    from runtimes.bench import (bench, compile_line, gate, limit_cell, limits_line, markdown, plot, save_json,
                                target_lines)

    if bundle is None:
        bundle = DEFAULT_BUNDLE
        if not (bundle / "manifest.json").is_file():
            from exporters.build import export_bundle
            from neat.export_spec import neat_spec
            from neat.progress import timed_step

            outcomes = export_bundle(neat_spec(), ["all"], bundle, step=timed_step)
            _fail_on(outcomes, bundle)
    console = Console(stderr=True)
    with console.status("benchmarking") as status:
        record = bench(bundle, runs=runs, cold_start=not no_cold_start,
                       report=lambda key: status.update(f"benchmarking {key}"))
    table = Table(title=f"neat bench {bundle} ({record['profile']['cpu']})")
    for col in ("artifact", "p50 ms", "p99 ms", "vs eager", "% of limit", "bytes/s", "cold start", "max err",
                "argmax", "bits/byte", "greedy"):
        table.add_column(col)
    for r in record["artifacts"]:
        table.add_row(r["artifact"], f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['speedup_vs_eager']:.2f}x",
                      limit_cell(r), f"{r['throughput_bytes_s']['1']:,.0f}",
                      f"{r['cold_start_s']:.2f}s" if r["cold_start_s"] is not None else "-",
                      f"{r['parity']['max_abs']:.1e}", f"{r['parity']['argmax']:.1%}", f"{r['bits_per_byte']:.3f}",
                      "same" if r["generation_equal"] else f"differs at {r['generation_first_difference']}")
    out = _console()
    out.print(table)
    for line in [limits_line(record), compile_line(record), f"chosen artifact here: {record['chosen']}",
                 *target_lines(record)]:
        out.print(line, highlight=False)
    if json_out:
        save_json(record, json_out)
    if md_out:
        md_out.parent.mkdir(parents=True, exist_ok=True)
        md_out.write_text(markdown(record))
    if plot_out:
        click.echo(f"plot: {plot(record, plot_out)}", err=True)
    if baseline:
        problems = gate(record, json.loads(baseline.read_text()), max_regression)
        if problems:
            raise click.ClickException("regression against " + str(baseline) + ": " + "; ".join(problems))
        click.echo(f"no regression against {baseline} (allowed speed drop {max_regression:g}%)", err=True)


def _compare_generation(bundle: Path, prompt: bytes, max_bytes: int) -> None:
    from rich.table import Table

    from runtimes.generation import compare_generation

    rows = compare_generation(bundle, prompt, max_bytes)
    table = Table(title=f"greedy generation of {max_bytes} bytes vs the eager reference")
    for col in ("artifact", "first difference", "text"):
        table.add_column(col)
    for r in rows:
        where = "identical" if r["first_difference"] is None else f"byte {r['first_difference']}"
        table.add_row(r["key"], r["error"] or where, repr(r["text"][:60]))
    _console().print(table)


def _console():
    """Standard output for tables: the terminal's width, or 160 columns in logs (CI), where rich would
    squeeze a wide table into 80."""
    import os

    from rich.console import Console

    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160) if wide else Console()


def _status(text: str):
    from rich.console import Console

    return Console(stderr=True).status(text)


if __name__ == "__main__":
    sys.exit(main())
