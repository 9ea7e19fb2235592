"""What a user of a bundle sees: who may read it (the user's umask, not mkdtemp's 0700), and why the
runtime chose the artifact it runs, with every other artifact's reason."""
import os

import pytest

import runtimes
from exporters.writer import current_umask, write_bundle
from runtimes.bundle import read_manifest

EMPTY_SIGNATURE = {"inputs": [], "state": [], "outputs": []}


def write_with_umask(path, mask: int):
    """A bundle committed under `mask`, holding one file written 0600 (as tempfile.mkstemp writes them)."""
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        with write_bundle(path, {"name": "m"}, EMPTY_SIGNATURE) as writer:
            (writer.work / "cpu-fp32").mkdir()
            fd = os.open(writer.work / "cpu-fp32" / "model.bin", os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
            writer.commit()
    finally:
        os.umask(old)
    return {p.relative_to(path).as_posix(): p.stat().st_mode & 0o777 for p in [path, *path.rglob("*")]}


def test_a_bundle_is_written_with_the_users_umask_not_0700(tmp_path):
    modes = write_with_umask(tmp_path / "b", 0o022)
    assert modes == {".": 0o755, "cpu-fp32": 0o755, "cpu-fp32/model.bin": 0o644, "manifest.json": 0o644}, modes
    private = write_with_umask(tmp_path / "p", 0o077)  # a stricter umask is kept
    assert private == {".": 0o700, "cpu-fp32": 0o700, "cpu-fp32/model.bin": 0o600, "manifest.json": 0o600}


def test_session_backend_lists_every_artifact_not_chosen_with_its_reason(toy_bundle):
    bundle, _ = toy_bundle
    keys = set(read_manifest(bundle).artifacts) | {"eager"}
    assert {"coreml-fp32", "tensorrt-fp32", "onnx-fp32"} <= keys  # the toy bundle has every target built here
    choice = runtimes.load(bundle).backend
    reasons = {c.key: c.reason for c in choice.skipped}
    assert set(reasons) == keys - {choice.key}, reasons
    assert "only on macOS" in reasons["coreml-fp32"]
    assert "GPU" in reasons["tensorrt-fp32"] or "not installed" in reasons["tensorrt-fp32"]
    assert reasons["exported-fp32"].startswith(
        "not tried: a higher-ranked artifact loaded; usable here: exported fp32, ")
    assert reasons["eager"] == "the bundle carries no reference weights"
    assert all(f"skipped {k}: " in str(choice) for k in reasons)

    forced = runtimes.load(bundle, backend="exported").backend
    reasons = {c.key: c.reason for c in forced.skipped}
    assert forced.key == "exported-fp32" and set(reasons) == keys - {"exported-fp32"}
    assert reasons["onnx-fp32"] == "not tried: backend='exported' was asked for"


@pytest.mark.parametrize("status", ["Umask:\t0027\n", "Name:\tpython\n", None])
def test_the_umask_is_read_without_changing_it(status, tmp_path):
    """From /proc where it says it; otherwise (an older kernel, no /proc) by setting and restoring it."""
    fake = tmp_path / "status"
    if status is not None:
        fake.write_text(status)
    real = os.umask(0o022)
    try:
        assert current_umask(str(fake)) == (0o027 if status and "Umask" in status else 0o022)
        assert os.umask(0o022) == 0o022  # unchanged
    finally:
        os.umask(real)


def test_verify_says_what_it_checked(toy_bundle, toy, tmp_path):
    """`neat verify`'s lines: the manifest's schema, how many files matched their sha256, and per artifact its
    verdict and how it was verified."""
    import shutil

    from exporters.build import verify_bundle
    from neat.report import verify_lines

    bundle, _ = toy_bundle
    manifest = read_manifest(bundle)
    files = sum(len(a.files) for a in manifest.artifacts.values())
    lines = verify_lines(manifest, verify_bundle(bundle, toy), reference=False)  # the toy bundle carries none
    n = len(manifest.artifacts)
    assert lines[0] == f"manifest: valid, schema neat-bundle version 1, {n} artifact(s)"
    assert lines[1] == f"sha256: {files} files ({files} in {n} artifact(s)): all match the manifest"
    how = dict(line.split(": ", 1) for line in lines[2:])
    assert how["onnx-fp32"] == "passed (executed: ONNX Runtime, CPU provider)"
    assert how["coreml-fp32"] == "passed (evaluated off-device: the saved ML program, op by op in NumPy)"
    assert how["tensorrt-fp32"].startswith("built, not executed (")

    damaged = tmp_path / "b"
    shutil.copytree(bundle, damaged)
    (damaged / "onnx-fp32" / "model.onnx").write_bytes(b"not a model")
    lines = verify_lines(manifest, verify_bundle(damaged, toy, keys=("onnx-fp32",)), reference=True)
    assert lines[1] == "sha256: 1 files (0 in 1 artifact(s) and the reference weights): onnx-fp32 differ from the manifest (below)"
    assert lines[2] == "onnx-fp32: failed (files differ, not run)"
