"""The regression benchmark: this machine against the committed baseline, or a new baseline.

    python -m benchmarks.regression                # check: exit 1 naming each regression
    python -m benchmarks.regression --update       # re-measure and rewrite the committed baseline files

Both run what `neat bench` runs (`benchmarks.run`) on the default bundle (exported first if missing) and
compare speed ratios to eager, parity, bits per byte and greedy generation with
`benchmarks/results/bench_cpu.json`. The baseline was measured on a 2-core CPU machine; ratios, not
absolute times, are compared, and the default allowance (25%) covers the spread measured there
(benchmarks/NOTES.md). A check skips the fresh-process cold-start measurements unless --cold-start is
given; an update always takes them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import click

RESULTS = Path(__file__).parent / "results"
BASELINE = RESULTS / "bench_cpu.json"


def options(args: argparse.Namespace) -> dict:
    """The `benchmarks.run.run` arguments for this check or update."""
    common = {"bundle": args.bundle, "runs": args.runs, "decode_bytes": args.generate_bytes, "record_in": args.record}
    if args.update:
        return {**common, "json_out": BASELINE, "md_out": RESULTS / "bench_cpu.md", "plot_out": RESULTS / "bench_cpu.png"}
    return {**common, "baseline": args.baseline, "max_regression": args.max_regression, "cold_start": args.cold_start}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="rewrite the committed baseline (json, md, png)")
    parser.add_argument("--bundle", type=Path, help="bundle to measure (default: ./neat-bundle, exported if missing)")
    parser.add_argument("--record", type=Path, help="check this stored `neat bench --json` record instead of measuring")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per artifact (default 100)")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help=f"record to check against (default {BASELINE})")
    parser.add_argument("--max-regression", type=float, default=25.0,
                        help="allowed drop of a speed ratio, percent (default 25)")
    parser.add_argument("--cold-start", action="store_true", help="also measure cold starts when checking")
    parser.add_argument("--generate-bytes", type=int, default=1024,
                        help="greedy bytes per artifact and path for the generation figures (default 1024; 0: none)")
    args = parser.parse_args(argv)
    if not args.update and not args.baseline.is_file():
        parser.error(f"--baseline {args.baseline}: no such file (measure one with --update)")
    if args.record is not None and (args.update or not args.record.is_file()):
        parser.error(f"--record {args.record}: " + ("--update measures; it takes no record" if args.update
                                                    else "no such file"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from benchmarks.run import run
    from neat.deploy import user_errors

    try:
        run(**options(args))
    except user_errors() as exc:  # a regression, or a problem with the bundle: printed, exit 1
        click.echo(f"Error: {exc}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
