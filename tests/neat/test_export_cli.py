"""`neat export all` and `neat verify` on the shipped model, as a new user runs them (one export per session)."""

from click.testing import CliRunner

from neat.cli import main
from runtimes.bundle import read_manifest

EXPECTED = {"exported": "passed", "onnx": "passed", "cpu": "passed", "coreml": "passed",
            "tensorrt": "built, not executed"}


def test_export_all_verifies_every_artifact(neat_bundle):
    out, res = neat_bundle
    assert res.exit_code == 0, res.output
    manifest = read_manifest(out)
    verdicts = {a.target: a.parity.verdict for a in manifest.artifacts.values()}
    for target, verdict in EXPECTED.items():
        assert verdicts.get(target) == verdict, (target, res.output)
    for art in manifest.artifacts.values():
        if art.parity.verdict == "passed":
            assert art.parity.worst["max_abs"] <= 1e-4 and art.parity.worst["argmax"] == 1.0
            assert {c["name"].split(" (")[0] for c in art.parity.cases} == {
                "example inputs", "random", "real data", "long stream, real data"}
            assert {c["batch"] for c in art.parity.cases} == {1, 4}  # both batch bounds
            tensors = art.parity.worst["tensors"]  # every output and every state tensor was compared
            assert set(tensors) == {"logits"} | {f"new_{t['name']}" for t in manifest.signature["state"]}
            assert max(c["chunks"] for c in art.parity.cases) == 64  # long enough for divergence to show
    assert "reference" in manifest.model and manifest.signature["dynamic"]["batch"] == {"min": 1, "max": 4}
    for target in EXPECTED:
        assert target in res.output  # the summary table names every artifact


def test_every_artifact_carries_the_decode_step_verified_against_the_chunk_forward(neat_bundle):
    out, _ = neat_bundle
    manifest = read_manifest(out)
    assert manifest.signature["decode"] == {"enter": "step_enter", "step": "step", "light_step": "byte_step",
                                            "gate": "needs_patch", "commit": "step_commit"}
    for art in manifest.artifacts.values():
        assert {m: p.verdict for m, p in art.methods.items()} == dict.fromkeys(manifest.signature["methods"],
                                                                              EXPECTED[art.target]), art.key
        if EXPECTED[art.target] != "passed":
            assert art.decode is None  # nothing stepped where nothing runs: not claimed
            continue
        (case,) = art.decode.cases
        assert art.decode.verdict == "passed" and art.decode.worst["argmax"] == 1.0, art.key
        assert case["steps"]["full"] > 0 and case["steps"]["light"] > case["steps"]["full"]  # both forms ran
        assert case["steps"]["full"] + case["steps"]["light"] == 4 * 128  # 4 chunks, one byte per call
        assert case["steps"]["commits"] == 3  # a full chunk committed before the next byte: 3 of the 4


def test_verify_reruns_every_check(neat_bundle):
    out, _ = neat_bundle
    # every check (forward, methods, the decode step) of an executed, a compiled and a built-only artifact; the
    # export above ran the same checks on every artifact through the same code
    keys = ["onnx-fp32", "cpu-fp32", "tensorrt-fp32"]
    res = CliRunner().invoke(main, ["verify", str(out), *[a for k in keys for a in ("--artifact", k)]],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "passed" in res.output and "built, not executed" in res.output and "coreml" not in res.output
    # what it checked, in words: the schema, the files' hashes (the reference's too), how each was verified
    assert "manifest: valid, schema neat-bundle version 1" in res.output
    assert "and the reference weights): all match the manifest" in res.output
    assert "onnx-fp32: passed (executed: ONNX Runtime, CPU provider)" in res.output


def test_verify_fails_on_a_damaged_bundle(neat_bundle, tmp_path):
    import shutil

    out, _ = neat_bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    path = copy / "onnx-fp32" / "model.onnx"
    path.write_bytes(path.read_bytes()[:-100])
    res = CliRunner().invoke(main, ["verify", str(copy), "--artifact", "onnx-fp32"])  # the others: the test above
    assert res.exit_code == 1 and "onnx-fp32" in res.output and "truncated" in res.output
    assert "onnx-fp32 differ from the manifest" in res.output and "onnx-fp32: failed (files differ" in res.output
    assert "cpu-fp32" not in res.output  # only the artifact asked for was rechecked
    res = CliRunner().invoke(main, ["verify", str(copy), "--artifact", "tflite-fp32"])
    assert res.exit_code == 1 and "no artifact 'tflite-fp32'" in res.output and "onnx-fp32" in res.output


def test_export_errors_are_one_paragraph(tmp_path):
    res = CliRunner().invoke(main, ["export", "tflite", "--out", str(tmp_path / "b")])
    assert res.exit_code == 1 and "unknown target 'tflite'" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["export", "cpu", "--batch", "4:1", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "MIN <= MAX" in res.output
    assert not (tmp_path / "b").exists()
