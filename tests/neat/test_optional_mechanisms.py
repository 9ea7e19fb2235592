"""The Titans memory and the Transformer² experts are optional (cfg.memory, cfg.experts): a model without them has
no modules, weights or state for them, exports and verifies (its decode step equals its chunk forward:
tests/neat/test_step.py), and `neat eval` skips the
ablations that would take away what it does not have."""
import dataclasses

import pytest
import torch

from neat.ablations import conditions, skipped
from neat.checkpoint import load_checkpoint, save_checkpoint
from neat.config import preset
from neat.model import NeatModel, NoExpertsError, count_parameters
from neat.step import DecodeStep, STEP_STATE_NAMES

FULL = {}
NO_MEMORY = {"memory": False}
NO_EXPERTS = {"experts": ()}
LEAN = {"memory": False, "experts": ()}
# nano: micro over 32-byte chunks and 8 patch slots (tests/benchmarks/conftest.py), half micro's graph
NANO = dict(entropy_threshold=5.2, chunk_len=32, max_patches=8, local_window=16, persistent_tokens=1)


def nano(**changes) -> NeatModel:
    torch.manual_seed(0)
    model = NeatModel(preset("micro").replace(**NANO, **changes))
    if model.cfg.experts:
        model.factor_svf()
        with torch.no_grad():  # experts that differ, so a mix matters
            for layer in model.layers:
                layer.mlp.up.Z.normal_(0, 1)
    if model.cfg.memory:
        with torch.no_grad():  # a memory whose output is not ~zero
            for layer in model.layers:
                layer.memory.w2_init.normal_(0, 0.1)
    return model.eval()


def test_config_rejects_what_cannot_be_built():
    cfg = preset("micro")
    for changes, words in [({"experts": (), "svf_factored": True}, "nothing to factor"),
                           ({"experts": ("prose", "prose")}, "twice"), ({"experts": ["prose"]}, "tuple"),
                           ({"memory": "no"}, "True or False")]:
        with pytest.raises(ValueError, match=words):
            cfg.replace(**changes)
    assert type(cfg).from_json(cfg.replace(**LEAN).to_json()) == cfg.replace(**LEAN)  # an empty tuple survives JSON


def test_a_model_without_a_mechanism_has_no_weights_and_no_state_for_it():
    full, lean = nano(**FULL), nano(**LEAN)
    for model, mechanisms in [(nano(**NO_MEMORY), ("memory.",)), (nano(**NO_EXPERTS), ("dispatch.", ".Z", ".U")),
                              (lean, ("memory.", "dispatch.", ".Z", ".gate."))]:
        assert count_parameters(model) < count_parameters(full)
        assert not [k for k in model.state_dict() if any(m in k for m in mechanisms)]
    assert set(full.state_names) - set(lean.state_names) == {"dispatch", "mem_w1", "mem_w2", "mem_s1", "mem_s2"}
    assert len(lean.init_state(2)) == len(lean.state_names) == len(lean.state_spec()) == 8
    out = lean.forward_detailed(*lean.example_inputs(2)[:1], lean.init_state(2))
    assert len(out["state"]) == 8 and out["dispatch_logits"] is None
    assert set(lean.state_bounds()) <= set(lean.state_names)
    step = DecodeStep(lean)
    assert len(step.step_state(1)) == len(step.names) == len(STEP_STATE_NAMES) - 6  # no mem_*, disp, disp_sum
    with pytest.raises(NoExpertsError, match="no experts"):
        lean(*lean.example_inputs(1), alpha=torch.ones(1, 3) / 3)
    with pytest.raises(NoExpertsError, match="leave factor_svf out"):
        nano(**NO_EXPERTS).factor_svf()


def test_eval_conditions_skip_what_the_model_does_not_have():
    full_names = set(conditions(nano(**FULL)))
    assert {"memory_off", "memory_reset_every_chunk", "z_zero", "expert_prose"} <= full_names
    assert not skipped(nano(**FULL))
    assert set(conditions(nano(**NO_MEMORY))) == full_names - {"memory_off", "memory_reset_every_chunk"}
    lean = nano(**LEAN)
    assert set(conditions(lean)) == {"carried", "reset_every_chunk"}
    assert skipped(lean) == {"memory_off": "no memory", "memory_reset_every_chunk": "no memory",
                             "z_zero": "no experts", "expert_*": "no experts"}
    # every condition still runs (the state reset names this model's state, not the default's)
    from neat.evaluate import score_conditions

    w = torch.randint(0, 256, (2, 2 * lean.cfg.chunk_len + 1), generator=torch.Generator().manual_seed(2),
                      dtype=torch.int32)
    table = score_conditions(lean, {"prose": w})
    assert set(table) == {"carried", "reset_every_chunk"} and table["carried"]["prose"] != table["reset_every_chunk"]["prose"]


def test_eval_bars_say_no_memory_and_no_experts():
    from neat.evaluate import bars
    from neat.report import eval_tables

    by = {"prose": 2.0, "code": 2.0, "grid": 1.0}
    r = {"model": "nano", "stream_bytes": 64, "streams_per_task": 2, "flops_per_byte": 1e6,
         "mechanisms": {"memory": False, "experts": []}, "skipped_conditions": skipped(nano(**LEAN)),
         "conditions": {"carried": by, "reset_every_chunk": {**by, "prose": 2.2}},
         "baselines": {"ngram": {"text": 2.5, "flops_per_byte": 0.0}}, "max_state_over_bound": 0.5, "finite": True,
         "image_accuracy": {"same": 0.9, "previous": 0.8}, "image_majority_accuracy": 0.3,
         "dispatch_accuracy": None, "dispatch_majority_accuracy": None, "mean_patch_bytes": 4.0}
    r["bars"] = bars(r)
    notes = {b.get("note") for b in r["bars"] if b["value"] is None}
    assert notes == {"no memory", "no experts"}
    from rich.console import Console

    console = Console(width=200, record=True)
    for table in eval_tables(r):
        console.print(table)
    text = console.export_text()
    assert "no memory" in text and "no experts" in text and "memory output off" in text


def test_a_lean_checkpoint_exports_to_onnx_and_verifies(tmp_path):
    """Checkpoint -> load (the config in its metadata rebuilds the lean model) -> describe -> onnx, verified."""
    from exporters.build import export_bundle
    from neat.export_spec import neat_spec
    from runtimes.bundle import read_manifest

    path = save_checkpoint(nano(**LEAN), tmp_path / "lean.safetensors")
    loaded = load_checkpoint(path)
    assert not loaded.cfg.memory and loaded.cfg.experts == ()
    # the layout is the point, not divergence over kilobytes: 8 chunks of long stream, batch bounds 1 and 2
    spec = dataclasses.replace(neat_spec(path, batch=(1, 2)), methods={}, decode={}, long_stream_chunks=8)
    (outcome,) = export_bundle(spec, ["onnx"], tmp_path / "bundle", "fp32")
    assert outcome.ok and outcome.verdict == "passed", outcome.message
    state = {t["name"] for t in read_manifest(tmp_path / "bundle").signature["state"]}
    assert state == set(loaded.state_names) and not any(n.startswith("mem_") or n == "dispatch" for n in state)


def test_neat_train_without_memory_and_experts_records_the_config(tmp_path):
    """`neat train --no-memory --no-experts`: no expert stage, and the checkpoint's config rebuilds the model."""
    from click.testing import CliRunner

    from neat.checkpoint import checkpoint_info
    from neat.cli import main

    out = tmp_path / "lean.safetensors"
    res = CliRunner().invoke(main, ["train", "--preset", "micro", "--no-memory", "--no-experts", "--out", str(out),
                                    "--entropy-steps", "1", "--base-steps", "1", "--expert-steps", "3", "--batch", "3",
                                    "--set", "local_dim=48", "--set", "local-window=16"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "base" in res.stderr and "experts" not in res.stderr  # stage 3 skipped
    model, info = load_checkpoint(out), checkpoint_info(out)
    assert not model.cfg.memory and model.cfg.experts == () and not model.cfg.svf_factored
    assert info["steps"] == {"entropy": 1, "base": 1, "experts": 0} and info["memory"] is False and info["experts"] == []
    assert len(model.init_state(1)) == len(model.state_names) == 8
    assert (model.cfg.local_dim, model.cfg.local_window) == (48, 16) and info["sizes"] == ["local_dim=48", "local-window=16"]


@pytest.mark.parametrize("pair, says", [("foo=3", "FIELD one of"), ("local_dim=12x", "not an integer"),
                                        ("local_dim=0", "positive"), ("local_dim=33", "divisible by its number of heads"),
                                        ("local_dim=34", "must be even"),
                                        ("chunk_len=64", "FIELD one of")])
@pytest.mark.parametrize("arch", ["neat", "plain"])
def test_neat_train_set_rejects_a_bad_size_before_building_data(pair, says, arch, tmp_path):
    from click.testing import CliRunner

    from neat.cli import main

    out = tmp_path / "never.safetensors"
    res = CliRunner().invoke(main, ["train", "--preset", "micro", "--arch", arch, "--set", pair, "--out", str(out)])
    says = "not the plain baseline" if arch == "plain" else says  # the plain baseline takes no NEAT sizes
    assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output, res.output
    assert not out.exists()
