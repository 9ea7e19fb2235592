import pytest


@pytest.fixture(scope="session")
def neat_fp16_bundle(tmp_path_factory, micro_checkpoint):
    """The onnx-fp16 artifact of a micro NEAT (every mechanism, with its eager reference) in a bundle of its own:
    it needs no other artifact, so it is built while the shipped model's bundle is exported on another worker.
    Without the decode-step methods (its tests compare chunk outputs and generation, which then recomputes):
    they tripled its build, and every target's methods are tested on the shipped bundle and in test_methods."""
    import dataclasses

    from exporters.build import export_bundle
    from neat.export_spec import neat_spec

    out = tmp_path_factory.mktemp("neat-fp16") / "bundle"
    spec = dataclasses.replace(neat_spec(micro_checkpoint), methods={}, decode={})
    (outcome,) = export_bundle(spec, ["onnx"], out, "fp16")
    assert outcome.ok, outcome.message
    return out
