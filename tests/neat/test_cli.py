"""The `neat` command as a user runs it: version, help, eval of the shipped model, a short training run."""
import json

from click.testing import CliRunner

from neat import __version__
from neat.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version_and_help():
    assert __version__ in run("--version").output
    out = run("--help").output
    assert "NEAT Deploy" in out and "train" in out and "eval" in out


def test_eval_of_a_missing_checkpoint_is_one_clear_line(tmp_path):
    res = run("eval", str(tmp_path / "missing.safetensors"))
    assert res.exit_code == 1
    assert "no checkpoint at" in res.output and "Traceback" not in res.output


def test_shipped_checkpoint_beats_its_baselines(shipped_eval):
    r = shipped_eval
    assert r["bits_per_byte"] < 0.8 * r["unigram_bits_per_byte"]
    assert r["image_token_accuracy"] > r["image_majority_accuracy"] + 0.2
    assert r["dispatch_accuracy"] > r["dispatch_majority_accuracy"] + 0.2


def test_eval_json_prints_the_figures(tmp_path):
    res = run("eval", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    for key in ("bits_per_byte", "unigram_bits_per_byte", "image_token_accuracy", "dispatch_accuracy"):
        assert key in report


def test_short_training_run_writes_a_loadable_checkpoint(tmp_path):
    from neat.checkpoint import checkpoint_info, load_checkpoint

    out = tmp_path / "m.safetensors"
    res = run("train", "--out", str(out), "--entropy-steps", "3", "--base-steps", "2", "--expert-steps", "2",
              "--batch", "3")
    assert res.exit_code == 0, res.output
    model = load_checkpoint(out)
    assert model.cfg.svf_factored and checkpoint_info(out)["steps"]["base"] == 2
