"""The `neat` command as a user runs it: version, help, eval of the shipped model, a short training run."""
import json
import re

import pytest
from click.testing import CliRunner

from neat import __version__
from neat.cli import main


def run(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args), catch_exceptions=False)  # tables unwrapped


def test_version_and_help():
    assert __version__ in run("--version").output
    out = run("--help").output
    assert "NEAT Deploy" in out and "train" in out and "eval" in out


def test_eval_of_a_missing_checkpoint_is_one_clear_line(tmp_path):
    res = run("eval", str(tmp_path / "missing.safetensors"))
    assert res.exit_code == 1
    assert "no checkpoint at" in res.output and "Traceback" not in res.output


@pytest.mark.slow  # evaluates the shipped model and its baselines on held-out streams
def test_shipped_checkpoint_beats_its_simple_baselines_and_uses_its_carried_state(shipped_eval):
    """What the shipped model measurably does (README, `neat eval`); the bars it misses are listed there."""
    r = shipped_eval
    assert r["bits_per_byte"] < 0.6 * r["baselines"]["unigram"]["text"]
    carried, reset = r["conditions"]["carried"], r["conditions"]["reset_every_chunk"]
    assert (carried["prose"] + carried["code"]) < 0.98 * (reset["prose"] + reset["code"])
    for placement in ("same", "previous"):  # the map in the previous chunk is read through the carried state
        assert r["image_accuracy"][placement] > 0.85 > r["image_majority_accuracy"] + 0.4
    assert r["dispatch_accuracy"] is None and r["mechanisms"] == {"memory": False, "experts": []}  # shipped lean
    assert r["finite"] and r["max_state_over_bound"] <= 1.0


def test_eval_json_prints_the_figures(tmp_path):
    res = run("eval", "--json", "--chunks", "3", "--quiet")
    assert res.exit_code == 0, res.output
    assert res.stderr == ""  # --quiet: no progress lines
    report = json.loads(res.output[res.output.index("{"):])
    for key in ("bits_per_byte", "conditions", "baselines", "image_accuracy", "dispatch_accuracy", "bars"):
        assert key in report
    assert report["stream_chunks"] == 3 and {"unigram", "ngram", "plain"} <= set(report["baselines"])
    # the shipped model has no memory and no experts: their ablations are named as skipped, not scored
    assert set(report["conditions"]) == {"carried", "reset_every_chunk"}
    assert {"memory_off", "memory_reset_every_chunk", "z_zero"} <= set(report["skipped_conditions"])
    # the long-range task under every condition, and every row's cost (the shipped NEAT counted: 269 MFLOP per chunk)
    assert all({"recall", "recall_values"} <= set(by) for by in report["conditions"].values())
    assert abs(report["flops_per_byte"] * 128 / 268_747_904 - 1) < 1e-6 and report["train_seconds"] > 0
    plain = report["baselines"]["plain"]
    assert 2.6 < plain["flops_per_byte"] / report["flops_per_byte"] < 3.0 and plain["train_seconds"] > 0
    assert report["baselines"]["ngram"]["flops_per_byte"] == 0.0
    # by default also the plain at NEAT's FLOPs per byte, trained beside NEAT for at least its wall time
    equal = report["baselines"]["plain_equal_flops"]
    assert abs(equal["flops_per_byte"] / report["flops_per_byte"] - 1) < 0.01
    assert equal["train_seconds"] >= report["train_seconds"] and equal["train_steps"] >= report["train_steps"]
    assert any("at equal FLOPs per byte (plain_equal_flops," in b["bar"] for b in report["bars"])
    carried = report["conditions"]["carried"]  # 3 chunks are too short to reach a query (1 KB after its definition)
    assert carried["recall"] > 0 and carried["recall_values"] is None
    (recall_bar,) = [b for b in report["bars"] if b["bar"].startswith("long-range recall")]
    assert recall_bar["note"] == "no memory" and recall_bar["value"] is None  # no memory: nothing to compare


def test_eval_table_names_every_bar():
    res = run("eval", "--chunks", "2")
    assert res.exit_code == 0, res.output
    err = res.stderr.splitlines()  # not a terminal: a start line, what it measures as it starts, an end line
    assert err[0] == "start  evaluate on held-out streams of 2 chunks" and err[-1].startswith("done   evaluate on")
    assert any(line.startswith("  evaluate on held-out streams of 2 chunks: bits per byte, condition 'carried' (")
               for line in err), err
    for text in ("state reset every chunk", "6-gram", "plain byte transformer", "previous chunk", "bars"):
        assert text in res.output


def test_short_training_run_writes_a_loadable_checkpoint(tmp_path):
    from neat.checkpoint import checkpoint_info, load_checkpoint

    out = tmp_path / "m.safetensors"
    res = run("train", "--out", str(out), "--entropy-steps", "3", "--base-steps", "2", "--expert-steps", "2",
              "--batch", "3")
    assert res.exit_code == 0, res.output
    err = res.stderr.splitlines()  # not a terminal: plain lines
    assert err[0] == "start  train" and err[-1].startswith("done   train (") and re.search(r"^base +2/2 ", res.stderr, re.M)
    model = load_checkpoint(out)
    assert model.cfg.svf_factored and checkpoint_info(out)["steps"]["base"] == 2


def test_short_training_run_of_the_plain_baseline(tmp_path):
    from neat.checkpoint import checkpoint_info, load_checkpoint
    from neat.plain import PlainModel

    out = tmp_path / "p.safetensors"
    res = run("train", "--arch", "plain", "--out", str(out), "--base-steps", "1", "--expert-steps", "1",
              "--batch", "4", "--plain-size", "plain_equal_flops", "--extra-task", "recall")
    assert res.exit_code == 0, res.output
    model, info = load_checkpoint(out), checkpoint_info(out)
    assert isinstance(model, PlainModel) and model.cfg.name == "plain_equal_flops" and model.cfg.dim == 104
    assert info["steps"]["plain"] == 2 and info["extra_tasks"] == ["recall"] and info["plain_size"] == "plain_equal_flops"


def test_verify_explains_what_explain_names_and_every_failure():
    from exporters.build import Outcome
    from neat.cli import explain_keys

    outcomes = [Outcome("onnx", "fp32", "passed"), Outcome("coreml", "fp32", "failed", "output: error 0.4"),
                Outcome("cpu", "fp32", "failed", "integrity: model.pt2 sha256 differs")]
    assert explain_keys(None, (), outcomes) == ("coreml-fp32",)  # a parity failure, not a damaged file
    assert explain_keys("onnx-fp32", (), outcomes) == ("onnx-fp32", "coreml-fp32")
    assert explain_keys("*", (), outcomes) == ("onnx-fp32", "coreml-fp32", "cpu-fp32")
    assert explain_keys("*", ("onnx-fp32",), outcomes) == ("onnx-fp32", "coreml-fp32")


def test_train_help_gives_the_command_that_trained_the_shipped_checkpoint():
    """`neat train --help` (and the README) name the shipped recipe; the checkpoint records what it was trained with."""
    from neat.checkpoint import checkpoint_info
    from neat.train import TrainSettings

    info = checkpoint_info()
    command = " ".join(run("train", "--help").output.split())  # the help's lines, joined
    recipe = [f"--base-steps {info['steps']['base']}", f"--lr {info['lr']:g}",
              *(f"--set {size}" for size in info["sizes"])]
    if info["steps"]["entropy"] != TrainSettings.entropy_steps:
        recipe.append(f"--entropy-steps {info['steps']['entropy']}")
    recipe += ["--no-memory"] * (not info["memory"]) + ["--no-experts"] * (not info["experts"])
    for part in recipe:
        assert part in command, part
