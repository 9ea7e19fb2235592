"""Progress for long steps, on stderr: rich's live display on a terminal; without one (a file, a CI log),
plain lines when a step starts and ends and a heartbeat while it runs, so a log never goes silent.

`timed_step(label)` wraps one step and yields a handle whose `doing(what)` says what the step does now;
`rich_reporter()` reports a loop's counted steps (training). `--quiet` (`set_quiet`) silences both.
The heartbeat's period is HEARTBEAT_S, or NEAT_HEARTBEAT_S seconds when set.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from neat.errors import BadHeartbeat

LOG_EVERY = 0.1  # without a terminal, print a line at every tenth of a stage
HEARTBEAT_S = 15.0  # without a terminal, a line at least this often while a step runs
_settings = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Silence (True) or restore (False) every progress line and display of this process."""
    _settings["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _settings["quiet"]


def heartbeat_seconds() -> float:
    """NEAT_HEARTBEAT_S when set (a positive number of seconds), else HEARTBEAT_S."""
    raw = os.environ.get("NEAT_HEARTBEAT_S", "").strip()
    if not raw:
        return HEARTBEAT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise BadHeartbeat(f"NEAT_HEARTBEAT_S={raw!r} is not a positive number of seconds; set it to e.g. 15, "
                           "or unset it for the default")
    return seconds


class Heartbeat:
    """A daemon thread that writes `  ... <label>: <what> (<elapsed>s)` every `every` seconds until stopped;
    `doing(what)` changes what it says (and, when `announce`, writes a line at once)."""

    def __init__(self, label: str, write, every: float, what: str = "running", announce: bool = True):
        self.label, self.what, self._write, self._every, self._announce = label, what, write, every, announce
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat: {label}", daemon=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            self._write(f"  ... {self.label}: {self.what} ({self.elapsed():.0f}s)")

    def doing(self, what: str) -> None:
        self.what = what
        if self._announce:
            self._write(f"  {self.label}: {what} ({self.elapsed():.0f}s)")

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class _Silent:
    def doing(self, what: str) -> None:
        pass


class _Spinner:
    def __init__(self, status, label: str):
        self._status, self._label = status, label

    def doing(self, what: str) -> None:
        self._status.update(f"{self._label}: {what} ...")


def _plain_writer(console: Console):
    """Writes whole lines to the console's stream (resolved now), flushed, one thread at a time."""
    stream, lock = console.file, threading.Lock()

    def write(line: str) -> None:
        with lock:
            stream.write(line + "\n")
            stream.flush()
    return write


@contextlib.contextmanager
def timed_step(label: str, console: Console | None = None):
    """One long step: on a terminal a spinner, then a line with its elapsed time; without one a start line,
    a heartbeat while it runs and an end line; nothing when quiet. Yields a handle: `.doing(what)`."""
    if is_quiet():
        yield _Silent()
        return
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    if console.is_terminal:
        try:
            with console.status(f"{label} ...") as spinner:
                yield _Spinner(spinner, label)
        except BaseException:
            console.print(f"[red]✗[/red] {label}  {time.perf_counter() - t0:.1f}s", highlight=False)
            raise
        console.print(f"[green]✓[/green] {label}  {time.perf_counter() - t0:.1f}s", highlight=False)
        return
    write = _plain_writer(console)
    write(f"start  {label}")
    try:
        with Heartbeat(label, write, heartbeat_seconds()) as beat:
            yield beat
    except BaseException:
        write(f"failed {label} ({time.perf_counter() - t0:.1f}s)")
        raise
    write(f"done   {label} ({time.perf_counter() - t0:.1f}s)")


def _fmt(figures: dict) -> str:
    return "  ".join(f"{k} {v:,.0f}" if v >= 100 else f"{k} {v:.3f}" for k, v in figures.items())


@contextlib.contextmanager
def rich_reporter(console: Console | None = None, label: str = "train"):
    """Yields report(stage, step, total, figures), drawn on stderr; without a terminal, lines at every tenth of
    a stage inside a `timed_step(label)` (start, heartbeat, end); nothing when quiet."""
    console = console or Console(stderr=True)
    if is_quiet():
        yield lambda stage, step, total, figures: None
        return
    if not console.is_terminal:
        with timed_step(label, console) as beat:
            t0 = time.perf_counter()
            write = _plain_writer(console)

            def log(stage: str, step: int, total: int, figures: dict) -> None:
                beat.what = f"{stage} {step}/{total}"
                if step == total or step % max(1, int(total * LOG_EVERY)) == 0:
                    write(f"{stage:<8} {step:>6}/{total}  {time.perf_counter() - t0:7.1f}s  {_fmt(figures)}")

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
