"""`neat run`'s sampling defaults and the measurement behind them (benchmarks/sampling.py)."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

RECORD = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "sampling.json"


def test_repetition_counts_repeated_ngrams():
    from benchmarks.sampling import repetition

    assert repetition(list(range(20))) == 0.0
    assert repetition([1, 2] * 20, n=8) == pytest.approx(31 / 33)  # all but the first two 8-grams repeat
    assert repetition([1, 2, 3]) == 0.0  # too short for two 8-grams


def test_choose_takes_the_most_plausible_setting_that_does_not_loop():
    from benchmarks.sampling import choose

    real = {"repetition": 0.04}
    rows = [{"temperature": 0.0, "top_k": 0, "bits_per_byte": 0.8, "repetition": 0.93, "repetition_se": 0.01},
            {"temperature": 0.6, "top_k": 10, "bits_per_byte": 1.0, "repetition": 0.27, "repetition_se": 0.08},
            {"temperature": 0.8, "top_k": 10, "bits_per_byte": 1.4, "repetition": 0.05, "repetition_se": 0.01},
            {"temperature": 1.0, "top_k": 0, "bits_per_byte": 2.1, "repetition": 0.03, "repetition_se": 0.01}]
    assert choose(rows, real)["temperature"] == 0.8  # greedy and 0.6 loop; 1.0 is less plausible
    assert choose(rows, {"repetition": 0.0})["temperature"] == 1.0  # none within noise: the least repetitive


def test_run_defaults_are_the_committed_measurement():
    from benchmarks.sampling import choose, settings
    from neat.deploy import RUN_SAMPLING

    record = json.loads(RECORD.read_text())
    assert RUN_SAMPLING == record["chosen"]
    assert {(r["temperature"], r["top_k"]) for r in record["settings"]} == {(s["temperature"], s["top_k"])
                                                                          for s in settings()}
    best = choose(record["settings"], record["held_out_continuation"])  # the rule, on the committed figures
    assert {"temperature": best["temperature"], "top_k": best["top_k"]} == record["chosen"]


def test_run_samples_unless_greedy():
    from neat.cli import main
    from neat.deploy import RUN_SAMPLING, run_sampling

    assert run_sampling(False, None, None) == (RUN_SAMPLING["temperature"], RUN_SAMPLING["top_k"])
    assert run_sampling(False, 0.5, None) == (0.5, RUN_SAMPLING["top_k"])
    assert run_sampling(True, None, None) == (0.0, 0)
    res = CliRunner().invoke(main, ["run", "no-such-bundle", "--prompt", "x", "--greedy", "--temperature", "0.5"])
    assert res.exit_code == 1 and "--greedy" in res.output and "--temperature" in res.output, res.output
    res = CliRunner().invoke(main, ["run", "--help"])
    assert "--greedy" in res.output and f"[default: {RUN_SAMPLING['temperature']}]" in res.output
    assert "benchmarks/results/sampling.json" in res.output


def test_measure_scores_samples_and_the_real_continuation():
    from benchmarks.sampling import measure, prompts

    record = measure(n_bytes=10, seeds=1)
    real = record["held_out_continuation"]
    assert real["samples"] == [bytes(cont[:10]).decode("utf-8", "replace") for _, _, cont in prompts()]
    assert record["chosen"] in [{"temperature": r["temperature"], "top_k": r["top_k"]} for r in record["settings"]]
    greedy = record["settings"][0]
    assert greedy["setting"] == "greedy"
    for row in [real, *record["settings"]]:
        assert 0 < row["bits_per_byte"] < 16 and 0 <= row["repetition"] <= 1
