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


def test_generation_comparison_reports_every_artifact(bundle):
    from benchmarks.generation import compare_generation

    said = []  # the progress `neat run --compare` shows: each artifact as its generation starts
    rows = {r["key"]: r for r in compare_generation(bundle, PROMPT, 24, report=said.append)}
    assert said == [f"{key}: 24 bytes" for key in rows]
    assert {"eager", "onnx-fp32", "cpu-fp32", "exported-fp32"} <= set(rows)
    for key, row in rows.items():  # fp32 artifacts generate exactly what the reference generates
        assert not row["error"] and row["first_difference"] is None and len(row["text"]) == 24, key


def test_fp16_artifacts_are_compared_and_where_they_differ_is_reported(neat_fp16_bundle):
    from benchmarks.generation import compare_generation

    rows = {r["key"]: r for r in compare_generation(neat_fp16_bundle, PROMPT, 24)}
    assert {"eager", "onnx-fp16"} <= set(rows) and not rows["onnx-fp16"]["error"]
    fp16 = rows["onnx-fp16"]["first_difference"]
    assert fp16 is None or 0 <= fp16 < 24  # reported, not hidden


def test_timed_generation_steps_through_the_held_out_text_and_keeps_the_argmax():
    import numpy as np

    from benchmarks.generation import PROMPT_BYTES, Follow, continuation_ids, prompt_ids
    from neat.data import text_stream

    prose = text_stream("prose", held_out=True).tokens
    assert continuation_ids(5) == [int(b) for b in prose[PROMPT_BYTES:PROMPT_BYTES + 5]]
    assert prompt_ids(8) + continuation_ids(3, 8) == [int(b) for b in prose[:11]]
    pick = Follow([10, 20, 30])
    scores = [np.eye(256, dtype=np.float32)[i] for i in (7, 8, 9)]
    assert [pick(s) for s in scores] == [10, 20, 30] and pick.argmax == [7, 8, 9]  # fed the text, kept the argmax
    with pytest.raises(ValueError, match="ask for fewer"):
        continuation_ids(len(prose))
    from neat.cli_run import MAX_GENERATE_BYTES

    assert len(continuation_ids(MAX_GENERATE_BYTES)) == MAX_GENERATE_BYTES  # what neat bench allows is there
