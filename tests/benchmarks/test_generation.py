"""Greedy generation through every artifact of a bundle against the eager reference (`neat run --compare`)."""
import pytest

PROMPT = b"def read_config(path):\n    \"\"\"Read the configuration file at path.\"\"\"\n    with open(path) as f:\n"


@pytest.fixture(scope="module")
def bundle(neat_bundle):
    out, res = neat_bundle
    assert res.exit_code == 0, res.output
    return out


def test_first_difference():
    from benchmarks.generation import first_difference

    assert first_difference(b"abc", b"abc") is None
    assert first_difference(b"abX", b"abc") == 2
    assert first_difference(b"ab", b"abc") == 2


def test_generation_comparison_reports_every_artifact(bundle, tmp_path):
    """fp16 artifacts are compared too: where they first differ is reported, not hidden."""
    import shutil

    from benchmarks.generation import compare_generation
    from exporters.build import export_bundle
    from neat.export_spec import neat_spec

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    export_bundle(neat_spec(), ["onnx"], copy, "fp16")
    rows = {r["key"]: r for r in compare_generation(copy, PROMPT, 24)}
    assert {"eager", "onnx-fp32", "onnx-fp16", "cpu-fp32", "exported-fp32"} <= set(rows)
    assert rows["onnx-fp32"]["first_difference"] is None and not rows["onnx-fp16"]["error"]
    fp16 = rows["onnx-fp16"]["first_difference"]
    assert fp16 is None or 0 <= fp16 < 24
