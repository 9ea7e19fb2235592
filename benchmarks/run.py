"""`neat bench` as one library call, made by the command and by `python -m benchmarks.regression`.

The bundle (with none given, the default one, exported first when it does not exist), the measurement with
its progress on stderr (`bench`), the table and lines on stdout (`report.terminal`), the record written as
JSON, Markdown and a plot where asked (`report`), and the gate against a stored baseline record (`gate`):
a regression raises `Regression`, which the command prints as one paragraph and exits non-zero on.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from benchmarks.bench import bench
from benchmarks.gate import gate
from benchmarks.report import plot, save_json, save_markdown, terminal
from neat.deploy import default_bundle
from neat.errors import NeatError
from neat.progress import timed_step
from neat.report import show


class Regression(NeatError):
    """This run measured worse than the baseline record; the message names each regression."""


class NotARecord(NeatError):
    """A file given as a record or baseline is not a `neat bench --json` record."""


def read_record(path: Path) -> dict:
    """A record written by `neat bench --json`; NotARecord naming the file and the fix otherwise."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NotARecord(f"{path} is not a neat bench record ({type(exc).__name__}: {exc}); "
                         "give a file written by `neat bench --json`") from None
    if not (isinstance(record, dict) and record.get("benchmark") == "neat-bench"
            and isinstance(record.get("artifacts"), list)):
        raise NotARecord(f"{path} is JSON but not a neat bench record (no \"benchmark\": \"neat-bench\" with "
                         "artifacts); give a file written by `neat bench --json`")
    return record


def run(bundle: Path | None = None, runs: int = 50, cold_start: bool = True, json_out: Path | None = None,
        md_out: Path | None = None, plot_out: Path | None = None, baseline: Path | None = None,
        max_regression: float = 10.0, decode_bytes: int = 1024, record_in: Path | None = None,
        torch_compile: bool = True) -> dict:
    """Benchmark `bundle`, print the results, write the files asked for, and raise Regression when an
    artifact's speed ratio to eager dropped by more than `max_regression` percent against `baseline` (or
    its parity, bits per byte or greedy generation got worse). decode_bytes: bytes generated per artifact and
    path for the generation figures (0: none); torch_compile: measure torch.compile for comparison (its steady
    state as a row; its first call with the cold starts). With `record_in` (a stored record), nothing is measured: that
    record is shown, written and gated. Returns the record."""
    if record_in is not None:
        record = read_record(record_in)
        bundle = Path(record.get("bundle") or record_in)
    else:
        bundle = default_bundle() if bundle is None else bundle
        with timed_step(f"benchmark {bundle}") as progress:
            record = bench(bundle, runs=runs, cold_start=cold_start, decode_bytes=decode_bytes,
                           torch_compile=torch_compile, report=progress.doing)
    show(terminal(record, bundle))
    if json_out:
        save_json(record, json_out)
    if md_out:
        save_markdown(record, md_out)
    if plot_out:
        click.echo(f"plot: {plot(record, plot_out)}", err=True)
    if baseline:
        problems = gate(record, read_record(baseline), max_regression)
        if problems:
            raise Regression(f"regression against {baseline}: " + "; ".join(problems))
        click.echo(f"no regression against {baseline} (allowed speed drop {max_regression:g}%)", err=True)
    return record
