"""Progress display for long steps (training, evaluation): a rich bar on a terminal, plain lines in logs."""
from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LOG_EVERY = 0.1  # without a terminal, print a line at every tenth of a stage


def _fmt(figures: dict) -> str:
    return "  ".join(f"{k} {v:,.0f}" if v >= 100 else f"{k} {v:.3f}" for k, v in figures.items())


@contextlib.contextmanager
def rich_reporter(console: Console | None = None):
    """Yields report(stage, step, total, figures), drawn on stderr."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        t0 = time.perf_counter()

        def log(stage: str, step: int, total: int, figures: dict) -> None:
            if step == total or step % max(1, int(total * LOG_EVERY)) == 0:
                console.print(f"{stage:<8} {step:>6}/{total}  {time.perf_counter() - t0:7.1f}s  {_fmt(figures)}",
                              highlight=False)

        yield log
        return
    columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[figures]}"))
    tasks: dict[str, int] = {}
    with Progress(*columns, console=console, refresh_per_second=2) as bar:
        def report(stage: str, step: int, total: int, figures: dict) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, figures="")
            bar.update(tasks[stage], completed=step, figures=_fmt(figures))

        yield report


@contextlib.contextmanager
def timed_step(label: str, console: Console | None = None):
    """A spinner with the step's name while it runs, then one line with its elapsed time (on stderr)."""
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    try:
        with console.status(f"{label} ..."):
            yield
    except BaseException:
        console.print(f"[red]✗[/red] {label}  {time.perf_counter() - t0:.1f}s", highlight=False)
        raise
    console.print(f"[green]✓[/green] {label}  {time.perf_counter() - t0:.1f}s", highlight=False)
