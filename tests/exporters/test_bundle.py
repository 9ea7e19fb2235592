"""The bundle contract: round trip, integrity, path checks, blocking verification, atomic writes."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from exporters import onnx as onnx_target
from exporters.build import export_bundle, resolve_targets, verify_bundle
from exporters.errors import TargetUnavailable
from runtimes.bundle import read_manifest, resolve_inside
from runtimes.manifest import MANIFEST, sha256_file
from runtimes.errors import BundleError, IntegrityError
from toy import ToyCell, toy_spec


def copy_bundle(toy_bundle, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(toy_bundle[0], dst)
    return dst


def tree_hashes(path):
    return {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


def test_round_trip_and_reverify(toy_bundle, toy):
    bundle, _ = toy_bundle
    manifest = read_manifest(bundle)
    assert {k: v for k, v in manifest.signature.items() if k != "init_state"} == toy.signature()
    assert manifest.signature["init_state"]["path"] == "signature/init_state.safetensors"
    assert manifest.model["weights_sha256"] == toy.weights_sha256
    outcomes = verify_bundle(bundle, toy)
    assert {o.target: o.verdict for o in outcomes} == {k.rsplit("-", 1)[0]: a.parity.verdict
                                                        for k, a in manifest.artifacts.items()}


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_artifact_is_detected_by_hash(toy_bundle, toy, tmp_path, damage):
    bundle = copy_bundle(toy_bundle, tmp_path)
    target = bundle / "onnx-fp32" / "model.onnx"
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    target.write_bytes(bytes(data))
    outcome = {o.target: o for o in verify_bundle(bundle, toy)}["onnx"]
    assert outcome.verdict == "failed"
    assert ("sha256" if damage == "flip" else "truncated") in outcome.message


def test_paths_outside_the_bundle_are_refused(tmp_path):
    with pytest.raises(IntegrityError):
        resolve_inside(tmp_path, "../escape.bin")
    with pytest.raises(IntegrityError):
        resolve_inside(tmp_path, "/etc/passwd")


def test_artifact_from_perturbed_weights_fails_parity(toy_bundle, toy, tmp_path):
    """An artifact whose numbers are wrong but whose hashes are consistent is caught by verification."""
    bundle = copy_bundle(toy_bundle, tmp_path)
    wrong = ToyCell()
    with torch.no_grad():
        wrong.head.weight.add_(0.05 * torch.randn_like(wrong.head.weight))
    from exporters.capture import Captured

    path = bundle / "onnx-fp32" / "model.onnx"
    onnx_target.write_onnx(Captured(toy_spec(wrong)), path, onnx_target.DEFAULT_OPSET)
    onnx_target.optimize_offline(path.parent)  # and the graph ONNX Runtime's CPU provider loads, made from it
    manifest = json.loads((bundle / MANIFEST).read_text())
    for entry in manifest["artifacts"]["onnx-fp32"]["files"]:
        f = bundle / entry["path"]
        entry["sha256"], entry["size"] = sha256_file(f), f.stat().st_size
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    outcome = {o.target: o for o in verify_bundle(bundle, toy)}["onnx"]
    assert outcome.verdict == "failed" and "logits: error" in outcome.message


def test_a_failing_artifact_is_not_written_and_fails_the_export(toy_bundle, toy, tmp_path, monkeypatch):
    """A converter that produces wrong numbers: export reports failed and keeps the previous artifact."""
    bundle = copy_bundle(toy_bundle, tmp_path)
    before = tree_hashes(bundle / "onnx-fp32")
    wrong = ToyCell(seed=1)
    from exporters.capture import Captured

    real_write = onnx_target.write_onnx
    monkeypatch.setattr(onnx_target, "write_onnx",
                        lambda cap, path, opset: real_write(Captured(toy_spec(wrong)), path, opset))
    outcomes = export_bundle(toy, ["onnx"], bundle)
    assert [o.verdict for o in outcomes] == ["failed"] and "logits: error" in outcomes[0].message
    assert tree_hashes(bundle / "onnx-fp32") == before
    assert read_manifest(bundle).artifacts["onnx-fp32"].parity.verdict == "passed"


def test_interrupted_export_leaves_the_old_bundle_intact(toy_bundle, toy, tmp_path, monkeypatch):
    from exporters import exported

    bundle = copy_bundle(toy_bundle, tmp_path)
    before = tree_hashes(bundle)

    def interrupted(cap, out, settings):
        (out / "model.pt2").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(exported, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(toy, ["exported"], bundle)
    assert tree_hashes(bundle) == before
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]  # no temporary directory left behind


def test_exporting_one_target_replaces_only_that_artifact(toy_bundle, toy, tmp_path):
    bundle = copy_bundle(toy_bundle, tmp_path)
    before = tree_hashes(bundle)
    old = read_manifest(bundle)
    export_bundle(toy, ["exported"], bundle)
    after = tree_hashes(bundle)
    new = read_manifest(bundle)
    for key, art in old.artifacts.items():
        if key != "exported-fp32":
            assert new.artifacts[key] == art
            assert all(after[f.path] == before[f.path] for f in art.files)
    assert set(new.artifacts) == set(old.artifacts)


def test_bundle_of_other_weights_is_not_reverified_silently(toy_bundle):
    other = toy_spec(ToyCell(seed=3))
    with pytest.raises(Exception, match="other weights"):
        verify_bundle(toy_bundle[0], other)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="neat export"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_missing_library_is_a_named_error(monkeypatch):
    from exporters import coreml

    monkeypatch.setitem(sys.modules, "coremltools", None)  # as if it were not installed
    ok, why = coreml.is_available()
    assert not ok and 'pip install "neat-deploy[coreml]"' in why
    with pytest.raises(TargetUnavailable, match="cannot build target coreml here: coremltools is not installed"):
        resolve_targets(["coreml"], "fp32")


def test_unknown_target_and_precision():
    with pytest.raises(Exception, match="unknown target 'tflite'"):
        resolve_targets(["tflite"], "fp32")
    with pytest.raises(Exception, match="no int8 precision"):
        resolve_targets(["cpu"], "int8")


def test_an_artifact_that_does_not_load_fails_with_the_reason(toy, tmp_path, monkeypatch):
    def broken(artifact_dir, requirements):
        raise RuntimeError("parse error at line 1, column 1")

    monkeypatch.setattr(onnx_target, "runner", broken)
    (outcome,) = export_bundle(toy, ["onnx"], tmp_path / "b", "fp32")
    assert outcome.verdict == "failed" and "does not load: RuntimeError: parse error" in outcome.message


def test_an_option_for_another_target_is_refused(toy, tmp_path):
    from exporters.errors import ExportError

    with pytest.raises(ExportError, match=r"coreml_target \(target coreml\) do not apply to onnx"):
        export_bundle(toy, ["onnx"], tmp_path / "b", "fp32", {"coreml_target": "iOS18", "opset": None})
    assert not (tmp_path / "b").exists()  # refused before anything was written


def test_packages_import_without_optional_libraries():
    blocked = ["onnx", "onnxruntime", "onnxscript", "coremltools", "tensorrt", "tensorrt_rtx", "openvino", "executorch",
               "matplotlib"]
    code = ("import sys; sys.modules.update({m: None for m in %r}); "
            "import neat, exporters, runtimes, exporters.registry, runtimes.bundle; "
            "from exporters.registry import available_targets; a = available_targets(); "
            "assert not a['onnx'][0] and not a['coreml'][0] and not a['tensorrt'][0] and not a['openvino'][0] "
            "and not a['executorch'][0], a; "
            "print('ok')") % blocked
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


@pytest.mark.parametrize("key", ["onnx-fp32", "exported-fp32"])
def test_an_app_running_a_bundle_loads_no_model_exporter_or_benchmark_code(toy_bundle, key):
    """runtimes is what an app embeds: loading and running an artifact imports none of the other packages."""
    bundle, _ = toy_bundle
    code = ("import sys, numpy as np, runtimes; s = runtimes.load(sys.argv[1], backend=sys.argv[2]); "
            "s.call(*[np.zeros([2 if d == 'batch' else d for d in i['shape']], i['dtype']) "
            "for i in s.manifest.signature['inputs']]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'neat', 'exporters', 'matplotlib', 'benchmarks'}))")
    res = subprocess.run([sys.executable, "-c", code, str(bundle), key], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_the_next_export_removes_work_directories_of_killed_exports_only(tmp_path):
    """kill -9 during an export leaves its .partial directory; the next export of that bundle removes it, and
    leaves those of exports still running (and of other bundles) alone."""
    import os
    import subprocess
    import time

    from exporters.writer import STALE_UNOWNED_S, write_bundle

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a process that has exited
    killed, running = tmp_path / f".b.{dead}.abcd1234.partial", tmp_path / f".b.{os.getpid()}.efgh5678.partial"
    old, recent = tmp_path / ".b.oldformt.partial", tmp_path / ".b.newformt.partial"
    other = tmp_path / f".b.c.{dead}.ijkl9012.partial"  # bundle "b.c"'s, not ours
    for d in (killed, running, old, recent, other):
        (d / "cpu-fp32").mkdir(parents=True)
        (d / "cpu-fp32" / "model.pt2").write_bytes(b"x" * 1000)
    past = time.time() - STALE_UNOWNED_S - 60
    os.utime(old, (past, past))
    with write_bundle(tmp_path / "b", {"name": "m"}, {"inputs": [], "state": [], "outputs": []}) as writer:
        assert writer.work.name.startswith(f".b.{os.getpid()}.") and writer.work.exists()
        assert not killed.exists() and not old.exists()
        assert running.exists() and recent.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (running, recent, other))
