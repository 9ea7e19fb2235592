"""The regression benchmark: this machine against the committed baseline, or a new baseline.

    python -m benchmarks.regression                # check: exit 1 naming each regression
    python -m benchmarks.regression --update       # re-measure and rewrite the committed baseline files

Both run `neat bench` on the default bundle (exported first if missing) and compare speed ratios to eager,
parity, bits per byte and greedy generation with `benchmarks/results/bench_cpu.json`. The baseline was
measured on a 2-core CPU machine; ratios, not absolute times, are compared, and the default allowance
(25%) covers the spread measured there (benchmarks/NOTES.md). A check skips the fresh-process cold-start
measurements unless --cold-start is given; an update always takes them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BASELINE = RESULTS / "bench_cpu.json"


def command(args: argparse.Namespace) -> list[str]:
    """The `neat bench` arguments for this check or update."""
    cmd = ["bench"] + ([str(args.bundle)] if args.bundle else []) + ["--runs", str(args.runs)]
    if args.update:
        return cmd + ["--json", str(BASELINE), "--markdown", str(RESULTS / "bench_cpu.md"),
                      "--plot", str(RESULTS / "bench_cpu.png")]
    cmd += ["--baseline", str(args.baseline), "--max-regression", str(args.max_regression)]
    return cmd if args.cold_start else cmd + ["--no-cold-start"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="rewrite the committed baseline (json, md, png)")
    parser.add_argument("--bundle", type=Path, help="bundle to measure (default: ./neat-bundle, exported if missing)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per artifact (default 100)")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help=f"record to check against (default {BASELINE})")
    parser.add_argument("--max-regression", type=float, default=25.0,
                        help="allowed drop of a speed ratio, percent (default 25)")
    parser.add_argument("--cold-start", action="store_true", help="also measure cold starts when checking")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import click

    from neat.cli import main as neat

    try:
        neat.main(command(args), prog_name="neat", standalone_mode=False)
    except click.ClickException as exc:  # a regression, or a problem with the bundle: printed, exit 1
        exc.show()
        return exc.exit_code
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
