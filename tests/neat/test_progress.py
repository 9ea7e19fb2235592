"""Progress without a terminal (a file, a CI log): start and end lines, a heartbeat while a step runs,
nothing with --quiet (neat.progress)."""
import io
import re
import threading
import time

import pytest
from rich.console import Console

from neat.errors import BadHeartbeat
from neat.progress import rich_reporter, set_quiet, timed_step

BEAT = re.compile(r"^  \.\.\. slow step: (sleeping|waking) \(\d+s\)$")


@pytest.fixture
def log(monkeypatch):
    """A non-terminal console (what a redirected stderr is) and the heartbeat every 0.1 s; quiet restored."""
    monkeypatch.setenv("NEAT_HEARTBEAT_S", "0.1")
    yield Console(file=io.StringIO())
    set_quiet(False)


def lines(console: Console) -> list[str]:
    return console.file.getvalue().splitlines()


def test_a_slow_step_prints_start_heartbeats_and_end(log):
    with timed_step("slow step", log) as step:
        step.doing("sleeping")
        time.sleep(0.45)
    out = lines(log)
    assert out[0] == "start  slow step" and out[1] == "  slow step: sleeping (0s)"
    assert re.fullmatch(r"done   slow step \(0\.[45]s\)", out[-1]), out
    assert len([line for line in out if BEAT.match(line)]) >= 3, out  # every 0.1 s: at least 3 in 0.45 s
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat")]  # stopped with the step


def test_a_failed_step_says_so_and_stops_its_heartbeat(log):
    with pytest.raises(KeyError), timed_step("slow step", log):
        time.sleep(0.25)
        raise KeyError("x")
    assert lines(log)[-1].startswith("failed slow step (")
    n = len(lines(log))
    time.sleep(0.25)
    assert len(lines(log)) == n


def test_quiet_prints_nothing(log):
    set_quiet(True)
    with timed_step("slow step", log) as step:
        step.doing("sleeping")
        time.sleep(0.25)
    with rich_reporter(log) as report:
        report("stage", 1, 1, {"loss": 1.0})
    assert lines(log) == []


def test_a_training_loop_gets_lines_and_a_heartbeat_between_them(log):
    with rich_reporter(log, label="train") as report:
        report("base", 1, 2, {"loss": 2.0})
        time.sleep(0.35)  # one slow step: the heartbeat says where the loop is
        report("base", 2, 2, {"loss": 1.5})
    out = lines(log)
    assert out[0] == "start  train" and out[-1].startswith("done   train (")
    assert any(re.fullmatch(r"  \.\.\. train: base 1/2 \(\d+s\)", line) for line in out), out
    assert [line.split()[:2] for line in out if line.startswith("base")] == [["base", "1/2"], ["base", "2/2"]]


def test_a_bad_heartbeat_setting_names_the_fix(log, monkeypatch):
    monkeypatch.setenv("NEAT_HEARTBEAT_S", "soon")
    with pytest.raises(BadHeartbeat, match="NEAT_HEARTBEAT_S='soon'.*unset it"), timed_step("x", log):
        pass
