import pytest


@pytest.fixture(scope="session")
def neat_fp16_bundle(tmp_path_factory):
    """The onnx-fp16 artifact of a nano NEAT (every mechanism, with its eager reference) in a bundle of its own:
    it needs no other artifact, so it is built while the shipped model's bundle is exported on another worker.
    Without the decode-step methods (its tests compare chunk outputs and generation, which then recomputes):
    they tripled its build, and every target's methods are tested on the shipped bundle and in test_methods.
    Nano: the micro preset over 32-byte chunks with one memory chunk of 8 patch slots, half micro's graph (1,014
    nodes against 2,071), so this build and torch.compile's cold start of its reference take 0.6-0.7x as long."""
    import dataclasses

    import torch

    from exporters.build import export_bundle
    from neat.checkpoint import save_checkpoint
    from neat.config import preset
    from neat.export_spec import neat_spec
    from neat.model import NeatModel

    torch.manual_seed(0)
    cfg = preset("micro").replace(entropy_threshold=5.2, chunk_len=32, max_patches=8, local_window=16,
                                  persistent_tokens=1)
    checkpoint = save_checkpoint(NeatModel(cfg).factor_svf().eval(), tmp_path_factory.mktemp("nano") / "nano.safetensors")
    out = tmp_path_factory.mktemp("neat-fp16") / "bundle"
    spec = dataclasses.replace(neat_spec(checkpoint), methods={}, decode={})
    (outcome,) = export_bundle(spec, ["onnx"], out, "fp16")
    assert outcome.ok, outcome.message
    return out
