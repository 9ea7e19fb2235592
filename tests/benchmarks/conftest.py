import pytest


@pytest.fixture(scope="session")
def neat_fp16_bundle(tmp_path_factory, micro_checkpoint):
    """The onnx-fp16 artifact of a micro NEAT (every mechanism, decode-step methods included, with its eager
    reference) in a bundle of its own: it needs no other artifact, so it is built while the shipped model's
    bundle is exported on another worker."""
    from exporters.build import export_bundle
    from neat.export_spec import neat_spec

    out = tmp_path_factory.mktemp("neat-fp16") / "bundle"
    (outcome,) = export_bundle(neat_spec(micro_checkpoint), ["onnx"], out, "fp16")
    assert outcome.ok, outcome.message
    return out
