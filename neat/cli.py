"""The `neat` command. Thin: each command parses options, calls one library function, prints the result."""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from neat import __version__
from neat.errors import NeatError


class NeatGroup(click.Group):
    """Turns library errors into one readable paragraph; --debug shows the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NeatError as exc:
            if ctx.params.get("debug"):
                traceback.print_exc()
            raise click.ClickException(str(exc)) from None


@click.group(cls=NeatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="neat")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def main(debug: bool) -> None:
    """NEAT Deploy: export the NEAT model once to CoreML, TensorRT, ONNX and AOTInductor, verified
    against the PyTorch reference, then pick, run and benchmark the right artifact for each machine."""


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("runs/tiny.safetensors"),
              show_default=True, help="Where to write the checkpoint (.safetensors).")
@click.option("--preset", default="tiny", show_default=True, help="Model size: tiny or small.")
@click.option("--seed", default=0, show_default=True, help="Seed for data sampling and initialisation.")
@click.option("--entropy-steps", type=int, help="Stage 1 steps (entropy model).")
@click.option("--base-steps", type=int, help="Stage 2 steps (base model).")
@click.option("--expert-steps", type=int, help="Stage 3 steps (Transformer² experts).")
@click.option("--batch", type=int, help="Sequences per step.")
def train(out: Path, preset: str, seed: int, **overrides) -> None:
    """Train a NEAT model from scratch (about 15 minutes for tiny on 2 CPU cores) and save a checkpoint.

    Data is built on this machine: standard-library prose and code, and generated grid-world images."""
    from neat.progress import rich_reporter
    from neat.train import TrainSettings, train as run_training
    from neat.checkpoint import save_checkpoint

    settings = TrainSettings(preset=preset, seed=seed, **{k: v for k, v in overrides.items() if v is not None})
    with rich_reporter() as report:
        model, info = run_training(settings, report)
    save_checkpoint(model, out, info)
    click.echo(f"saved {out} ({info['train_seconds']} s)")


@main.command("eval")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def eval_command(checkpoint: Path | None, as_json: bool) -> None:
    """Score a checkpoint on held-out data (default: the shipped tiny model).

    Prints bits per byte on held-out text, image-token accuracy on held-out images and dispatch
    accuracy, each beside a simple baseline (unigram bits per byte; majority class)."""
    from neat.checkpoint import load_checkpoint
    from neat.evaluate import evaluate

    with _status("evaluating on held-out data"):
        report = evaluate(load_checkpoint(checkpoint))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"NEAT {report['model']}: held-out evaluation")
    for col in ("metric", "model", "baseline", "baseline is"):
        table.add_column(col)
    table.add_row("bits per byte (lower is better)", f"{report['bits_per_byte']:.3f}",
                  f"{report['unigram_bits_per_byte']:.3f}", "unigram byte frequencies")
    for task, fig in report["text"].items():
        table.add_row(f"  {task}", f"{fig['bits_per_byte']:.3f}", "", f"{fig['bytes']} bytes")
    table.add_row("image-token accuracy", f"{report['image_token_accuracy']:.1%}",
                  f"{report['image_majority_accuracy']:.1%}", "most frequent code")
    table.add_row("dispatch accuracy", f"{report['dispatch_accuracy']:.1%}",
                  f"{report['dispatch_majority_accuracy']:.1%}", "majority class")
    Console().print(table)


def _status(text: str):
    from rich.console import Console

    return Console(stderr=True).status(text)


if __name__ == "__main__":
    sys.exit(main())
