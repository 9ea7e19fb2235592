"""The README's `neat bench` tables are the command's own tables, rendered from the committed records."""
import json
from pathlib import Path

from benchmarks.report import README_TABLE, readme_table, terminal, update_readme

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_the_readme_tables_are_rendered_from_their_records():
    marked = README_TABLE.findall(README.read_text())
    assert {(kind, path) for _, kind, path, _, _ in marked} >= {
        ("table", "benchmarks/results/bench_cpu.json"),
        ("generation table", "benchmarks/results/bench_generation.json")}
    assert update_readme(README) == README.read_text(), "run: python -m benchmarks.report README.md"


def test_the_readme_table_has_the_columns_neat_bench_prints():
    record = json.loads((ROOT / "benchmarks/results/bench_generation.json").read_text())
    printed = terminal(record, Path("neat-bundle"))
    for table, kind in ((printed[0], "table"), (next(t for t in printed[1:] if getattr(t, "title", "") ==
                                                     "generation, batch 1"), "generation table")):
        header = readme_table(record, kind).splitlines()[0]
        assert header == "| " + " | ".join(c.header for c in table.columns) + " |"
        assert len(readme_table(record, kind).splitlines()) == 2 + len(record["artifacts"])
        first = readme_table(record, kind).splitlines()[2].strip("| ").split(" | ")
        assert first == [c._cells[0] for c in table.columns]  # the same cells as the terminal's first row


def test_help_timings_are_the_readmes():
    """Every duration a command's --help quotes is in the README's timing table, with its condition."""
    import re

    from click.testing import CliRunner

    from neat.cli import main

    readme = README.read_text()
    table = readme[readme.index("**How long things take**"):readme.index("Installing takes a few minutes.")]
    quoted = 0
    for command in ("eval", "bench", "run", "export", "verify", "train", "info"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"], terminal_width=1000).output.split())
        for figure in re.findall(r"\b(\d+ s|\d+ minutes?)\b(?= (?:on 2|quiet|busy|on a busy))", text):
            quoted += 1
            number = figure.split()[0]
            assert re.search(rf"\b{number} (s|min)\b", table), (command, figure)
    assert quoted >= 3
