"""The `neat` command. Thin: each command parses options, calls one library function, prints the result."""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from neat import __version__
from neat.cli_run import QUIET, TRUST_UNSIGNED, bench_command, info_command, run_command, serve_command
from neat.deploy import DEFAULT_BUNDLE, parse_batch, user_errors



class NeatGroup(click.Group):
    """Turns library errors into one readable paragraph; --debug shows the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except user_errors() as exc:
            if ctx.params.get("debug"):
                traceback.print_exc()
            raise click.ClickException(as_flags(str(exc))) from None


def as_flags(message: str) -> str:
    """A library message in the CLI's words: the Python keyword `batch=(1, 2)` is the flag `--batch 1:2`."""
    import re

    return re.sub(r"\bbatch=\((\d+), (\d+)\)", lambda m: f"--batch {m[1]}:{m[2]}", message)


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
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Peak AdamW learning rate of every stage (warm-up, then cosine decay).  [default: 0.002]")
@click.option("--plain-size", type=click.Choice(["plain", "plain_equal_flops"]),
              help="With --arch plain: plain (NEAT's parameter count, 2.8x its FLOPs per byte) or "
                   "plain_equal_flops (NEAT's FLOPs per byte).")
@click.option("--extra-task", "extra_tasks", type=click.Choice(["recall"]), multiple=True,
              help="A task no expert owns, read beside prose, code and grid in training: recall (key-value "
                   "recall across kilobytes, a job for the memory).")
@click.option("--no-memory", "memory", flag_value=False, default=None,
              help="Train without the Titans memory: no memory weights and no memory state in any artifact.")
@click.option("--no-experts", "experts", flag_value=False, default=None,
              help="Train without Transformer² experts: plain latent MLPs, no dispatch pass; stage 3 is skipped.")
@click.option("--set", "sizes", multiple=True, metavar="FIELD=N",
              help="Change one size of the preset, repeatable: e.g. --set local_dim=128 --set local_window=64 "
                   "(widths, depths, heads, windows; see neat.config.SIZE_FIELDS). Recorded in the checkpoint.")
@QUIET
def train(out: Path, preset: str, arch: str, seed: int, **overrides) -> None:
    """Train a NEAT model (or the plain baseline) from scratch and save a checkpoint.

    Data is built on this machine: standard-library prose and code, and generated grid-world images,
    read as persistent 4 KB streams with the state carried between steps. The defaults train NEAT v2 (every
    mechanism) and the shipped plain baseline; the shipped NEAT checkpoint is

    \b
      neat train --no-memory --no-experts --entropy-steps 300 --base-steps 3300 --lr 0.008 \\
                 --set local_dim=112 --set local_window=64 --set hash_rows=16381

    (README, Training: what each took)."""
    from neat.progress import rich_reporter
    from neat.train import TrainSettings, model_config, train as run_training
    from neat.checkpoint import save_checkpoint

    settings = TrainSettings(preset=preset, arch=arch, seed=seed, **{k: v for k, v in overrides.items() if v is not None})
    try:
        model_config(settings)  # a bad preset or --set fails here, before any data is built
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--preset/--set") from None
    with rich_reporter() as report:
        model, info = run_training(settings, report)
    save_checkpoint(model, out, info)
    click.echo(f"saved {out} ({info['train_seconds']} s)")


@main.command("eval")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plain", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              help="Checkpoint of a plain-transformer baseline, repeatable, one row each (default: the two shipped: "
                   "NEAT v2's parameter count, and NEAT's FLOPs per byte trained for its wall time; see `neat train "
                   "--arch plain`).")
@click.option("--chunks", default=64, show_default=True, type=click.IntRange(2),
              help="Chunks (of 128 bytes) per held-out stream; the state is carried across them.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@QUIET
def eval_command(checkpoint: Path | None, plain: tuple[Path, ...], chunks: int, as_json: bool) -> None:
    """Score a checkpoint on long held-out streams (default: the shipped tiny model): about 80 s on 2 cores,
    29 minutes on a busy host (load average 4 to 9; README, "How long things take").

    Bits per byte with the state carried, and with each mechanism taken away (state reset every chunk,
    memory off, memory reset, Transformer² off, each expert forced); image-token accuracy with the map in
    the same and in the previous chunk; beside a unigram, a 6-gram count model and the plain transformers
    (NEAT v2's parameter count; NEAT's FLOPs per byte, trained for its wall time), all computed in this run;
    then the bars each figure must meet."""
    from neat.checkpoint import SHIPPED_PLAINS, load_checkpoint
    from neat.evaluate import evaluate

    from neat.progress import timed_step
    from neat.report import eval_tables, show

    plain = plain or tuple(p for p in SHIPPED_PLAINS if p.is_file())
    with timed_step(f"evaluate on held-out streams of {chunks} chunks") as progress:
        report = evaluate(load_checkpoint(checkpoint), [load_checkpoint(p) for p in plain], chunks,
                          progress=progress.doing)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    show(eval_tables(report))


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
@QUIET
@click.pass_context
def export_command(ctx, targets, checkpoint, out, precision, batch, **options) -> None:
    """Export a checkpoint to one or more TARGETS and verify every artifact against the reference.
    `neat export triton BUNDLE --out REPO` instead writes a Triton model repository from a bundle.

    TARGETS: exported, onnx, tensorrt, coreml, mlx, cpu, cuda, openvino, executorch, or all (every target this machine
    can build, except mlx, openvino and executorch: their builds or verification take long; name them). Each artifact is compared with the eager model, every output and every state tensor, on
    example and random inputs at the batch bounds, held-out text and a 64-chunk (8 KB) stream with the
    state carried; one that fails is not written and the command exits non-zero."""
    if targets[0] == "triton":
        return _triton(ctx, targets[1:], out)
    from exporters.build import export_bundle
    from neat.deploy import check
    from neat.export_spec import neat_spec
    from neat.progress import timed_step
    from neat.report import outcomes_view, show

    spec = neat_spec(checkpoint, batch=parse_batch(batch))
    outcomes = export_bundle(spec, list(targets), out, precision, options, step=timed_step)
    show(outcomes_view(f"{spec.name} -> {out}", outcomes))
    check(outcomes, out)


def _triton(ctx: click.Context, args: tuple[str, ...], out: Path) -> None:
    """`neat export triton BUNDLE --out REPO` (exporters.triton): one bundle in, a model repository out."""
    from click.core import ParameterSource

    from exporters.triton import export_repository

    if len(args) != 1:
        raise click.UsageError("give one bundle: neat export triton BUNDLE --out REPO")
    if ctx.get_parameter_source("out") is not ParameterSource.COMMANDLINE:
        raise click.UsageError("give the repository directory to write: neat export triton BUNDLE --out REPO")
    click.echo(export_repository(Path(args[0]), out))


@main.command("verify")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BUNDLE)
@click.option("--artifact", "keys", multiple=True, metavar="KEY",
              help="Recheck only this artifact, e.g. onnx-fp32 (repeatable; default: every artifact).")
@click.option("--signature", is_flag=True, help="First require a valid signature by a trusted key.")
@click.option("--trusted-key", "trusted", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A public key (PEM) to trust besides those in $NEAT_HOME/trusted/ (repeatable).")
@click.option("--explain", "explain", is_flag=False, flag_value="*", default=None, metavar="[ARTIFACT]",
              help="Then say where each artifact (or only ARTIFACT, e.g. coreml-fp32) first departs from the "
                   "reference: the first ops out of tolerance, with their source lines. Failed ones always are.")
@TRUST_UNSIGNED
@QUIET
def verify_command(bundle: Path, keys: tuple[str, ...], signature: bool, trusted: tuple[Path, ...],
                   explain: str | None, trust_unsigned: bool) -> None:
    """Recheck a bundle: its signature (--signature), every file against its sha256, then every verification
    this machine can run (code-bearing artifacts only from a bundle signed by a trusted key); --explain:
    where artifacts depart from the reference (exporters.explain), as for every artifact that failed."""
    from exporters.build import verify_bundle
    from neat.deploy import bundle_spec, check
    from neat.progress import timed_step
    from neat.report import outcomes_view, show, verify_lines
    from runtimes.bundle import read_manifest
    from runtimes.trust import UNSIGNED, require_signature

    if signature:
        click.echo(f"signature: {require_signature(bundle, trusted).detail}")
    trust = UNSIGNED if trust_unsigned else list(trusted) or None
    spec = bundle_spec(bundle)
    outcomes = verify_bundle(bundle, spec, step=timed_step, keys=keys, trust=trust)
    show(outcomes_view(f"verify {bundle}", outcomes) + verify_lines(read_manifest(bundle), outcomes, True))
    explained = explain_keys(explain, keys, outcomes)
    if explained:
        from exporters.explain import explain_bundle

        with timed_step(f"explain {', '.join(explained)}"):
            reports = explain_bundle(bundle, spec, explained)
        click.echo("\n".join(f"{key}: {report}" for key, report in reports.items()))
    check(outcomes, bundle)


def explain_keys(explain: str | None, keys: tuple[str, ...], outcomes) -> tuple[str, ...]:
    """The artifacts `neat verify` explains: the one --explain names, every checked one for a bare
    --explain, and those whose parity failed (not their files) in any case."""
    failed = tuple(o.key for o in outcomes if o.verdict == "failed" and not o.message.startswith("integrity"))
    if explain == "*":
        return tuple(dict.fromkeys((*(keys or [o.key for o in outcomes]), *failed)))
    return tuple(dict.fromkeys((*((explain,) if explain else ()), *failed)))


@main.command("sign")
@click.argument("bundle", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Elliptic-curve private key (PEM). Default: your own, made on first use in $NEAT_HOME/keys/.")
def sign_command(bundle: Path, key: Path | None) -> None:
    """Sign BUNDLE (its manifest, and through it every file's sha256) into BUNDLE/bundle.sig. Whoever puts
    the public key in their $NEAT_HOME/trusted/ then loads its code-bearing artifacts."""
    from runtimes.trust import own_key, sign_bundle

    click.echo(f"signed {bundle}: {sign_bundle(bundle, key or own_key())}")


for _command in (info_command, run_command, bench_command, serve_command):  # neat/cli_run.py
    main.add_command(_command)


if __name__ == "__main__":
    sys.exit(main())
