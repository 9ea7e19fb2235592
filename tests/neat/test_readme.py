"""The README's code runs as written: every ```python block, each in a fresh namespace in a temporary
directory (those that open ./neat-bundle get the test run's export of the shipped model there), and every
`neat ...` command of its shell blocks parses its options against the real CLI (click's parser, not run)."""
import os
import re
import shlex
import sys
import types
from pathlib import Path

import click
import pytest

from neat.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


PYTHON = blocks("python")
NEEDS_BUNDLE = [b for b in PYTHON if "neat-bundle" in b]
STANDALONE = [b for b in PYTHON if "neat-bundle" not in b]


def neat_commands() -> list[list[str]]:
    """The arguments of every `neat` (or `.venv/bin/neat`) command in the README's bash blocks."""
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():  # a command continued with a backslash is one line
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and os.path.basename(words[0]) == "neat":
                    out.append(words[1:])
    return out


def run_block(code: str, where: Path, monkeypatch) -> None:
    """Run `code` as a module of its own (classes it defines get a module torch.export can look them up in)."""
    module = types.ModuleType("readme_block")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.chdir(where)
    exec(compile(code, str(README), "exec"), module.__dict__)


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(PYTHON) == 2 and len(NEEDS_BUNDLE) == 1 and len(neat_commands()) >= 10


@pytest.mark.parametrize("code", STANDALONE, ids=lambda c: c.split("\n")[2][:40])
def test_python_block_runs_as_written(code, tmp_path, monkeypatch, capsys):
    run_block(code, tmp_path, monkeypatch)
    assert capsys.readouterr().out.strip()  # each block prints what it shows


@pytest.mark.parametrize("code", NEEDS_BUNDLE, ids=lambda c: c.split("\n")[1][:40])
def test_python_block_on_the_shipped_bundle_runs_as_written(code, neat_bundle, tmp_path, monkeypatch, capsys):
    out, res = neat_bundle
    assert res.exit_code == 0, res.output
    (tmp_path / "neat-bundle").symlink_to(out)
    run_block(code, tmp_path, monkeypatch)
    printed = capsys.readouterr().out
    assert "skipped coreml-fp32: " in printed and "skipped tensorrt-fp32: " in printed  # every other artifact


@pytest.mark.parametrize("args", neat_commands(), ids=shlex.join)
def test_neat_command_parses_its_options(args, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("a prompt\n")  # the input file a user would have written
    (tmp_path / "benchmarks").symlink_to(README.parent / "benchmarks")  # the committed baseline record
    monkeypatch.chdir(tmp_path)
    parent = click.Context(main, info_name="neat")
    name, command, rest = main.resolve_command(parent, args)
    with command.make_context(name, rest, parent=parent):  # raises click.UsageError on an unknown or bad option
        pass
