"""The manifest schema against hostile manifests: each malformed field is one BundleError naming it, never a
traceback, a key leaving the bundle, or a value of the wrong type taken as it is."""
import copy
import json

import pytest

from runtimes.bundle import read_manifest
from runtimes.errors import BundleError
from runtimes.manifest import MAX_MANIFEST_BYTES, SCHEMA, SCHEMA_VERSION, parse_manifest

PARITY = {"verdict": "passed", "method": "executed: onnxruntime CPU"}
FILE = {"path": "onnx-fp32/model.onnx", "sha256": "a" * 64, "size": 10}


def valid() -> dict:
    tensor = {"name": "tokens", "dtype": "int32", "shape": ["batch", 8]}
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "model": {"name": "m"},
            "signature": {"inputs": [tensor], "state": [], "outputs": [tensor]},
            "artifacts": {"onnx-fp32": {"target": "onnx", "precision": "fp32", "files": [dict(FILE)],
                                        "toolchain": {}, "requirements": {}, "build_seconds": 1.5,
                                        "parity": dict(PARITY), "settings": {}}}}


def art(m: dict) -> dict:
    return m["artifacts"]["onnx-fp32"]


def rekey(m: dict, key: str, **fields) -> None:
    m["artifacts"][key] = {**m["artifacts"].pop("onnx-fp32"), **fields}


def test_the_valid_manifest_parses():
    m = parse_manifest(json.dumps(valid()))
    assert list(m.artifacts) == ["onnx-fp32"] and m.artifacts["onnx-fp32"].files[0].size == 10


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(schema_version=True), "schema version True"),
    (lambda m: m.update(schema_version=1.0), "schema version 1.0"),
    (lambda m: m.update(schema_version="1"), "schema version '1'"),
    (lambda m: m["artifacts"].update({"onnx-fp32": "not an object"}), "artifacts.onnx-fp32 should be an object"),
    (lambda m: m["artifacts"].update({"onnx-fp32": ["a", "b"]}), "should be an object"),
    (lambda m: rekey(m, "../outside"), "artifact key '../outside' must be <target>-<precision>"),
    (lambda m: rekey(m, "/abs/path"), "must be <target>-<precision>"),
    (lambda m: rekey(m, "cpu-fp32"), "artifact key 'cpu-fp32'"),  # the key must name its own target
    (lambda m: rekey(m, "../x-fp32", target="../x"), "must be <target>-<precision>"),
    (lambda m: rekey(m, "onnx-fp32/..", precision="fp32/.."), "must be <target>-<precision>"),
    (lambda m: art(m).update(target=7), "target should be str"),
    (lambda m: art(m).update(build_seconds="fast"), "build_seconds should be"),
    (lambda m: art(m).update(settings=[1, 2]), "settings should be dict"),
    (lambda m: art(m)["files"][0].update(size="abc"), "malformed entry"),
    (lambda m: art(m)["files"][0].update(size=True), "malformed entry"),
    (lambda m: art(m)["files"][0].update(size=-1), "malformed entry"),
    (lambda m: art(m)["files"][0].update(size=1.5), "malformed entry"),
    (lambda m: art(m)["files"][0].update(sha256="zz"), "malformed entry"),
    (lambda m: art(m)["files"][0].update(path=["a"]), "malformed entry"),
    (lambda m: art(m)["files"].append("a string"), "needs path, sha256 and size"),
    (lambda m: art(m).update(parity={"verdict": True}), "verdict must be one of"),
    (lambda m: m["signature"].update(inputs="x"), "signature.inputs should be list"),
])
def test_a_malformed_field_is_one_bundle_error(edit, words):
    raw = copy.deepcopy(valid())
    edit(raw)
    with pytest.raises(BundleError, match=words.replace("(", r"\(").replace("[", r"\[")):
        parse_manifest(json.dumps(raw))


def test_deep_nesting_and_non_json_are_bundle_errors():
    with pytest.raises(BundleError, match="nested too deeply"):
        parse_manifest("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="not valid JSON"):
        parse_manifest("{'schema': 1}")


def test_non_utf8_and_oversized_manifest_files_are_refused_unread(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b'{"schema": "\xff\xfe"}')
    with pytest.raises(BundleError, match="not UTF-8 text"):
        read_manifest(tmp_path)
    with open(tmp_path / "manifest.json", "wb") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: nothing is read, the size alone refuses it
    with pytest.raises(BundleError, match="over 16 MiB"):
        read_manifest(tmp_path)
