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
    (lambda m: art(m).update(target=7), "artifacts.onnx-fp32.target should be a string"),
    (lambda m: art(m).update(build_seconds="fast"), "build_seconds should be"),
    (lambda m: art(m).update(settings=[1, 2]), "artifacts.onnx-fp32.settings should be an object"),
    (lambda m: art(m)["files"][0].update(size="abc"), "files[0].size should be a whole number"),
    (lambda m: art(m)["files"][0].update(size=True), "files[0].size should be a whole number"),
    (lambda m: art(m)["files"][0].update(size=-1), "files[0].size should be at least 0"),
    (lambda m: art(m)["files"][0].update(size=1.5), "files[0].size should be a whole number"),
    (lambda m: art(m)["files"][0].update(sha256="zz"), "files[0].sha256 should be 64 lower-case hex digits"),
    (lambda m: art(m)["files"][0].update(path=["a"]), "files[0].path should be a string"),
    (lambda m: art(m)["files"].append("a string"), "artifacts.onnx-fp32.files[1] should be an object"),
    (lambda m: art(m).update(parity={"verdict": True}), "verdict must be one of"),
    (lambda m: m["signature"].update(inputs="x"), "signature.inputs should be a list"),
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


# ----- what the declared schema (runtimes.schema) catches, by the place it names -----------------------------
def tokens(m: dict, **ids) -> None:
    m["model"]["tokens"] = ids


@pytest.mark.parametrize("edit, words", [
    (lambda m: tokens(m, pad="1"), "model.tokens.pad should be a whole number"),  # no coercion of "1" to 1
    (lambda m: tokens(m, eos=True), "model.tokens.eos should be a whole number"),  # nor of a bool
    (lambda m: m["signature"].update(dynamic={"batch": {"min": "1", "max": 4}}),
     "signature.dynamic.batch.min should be a whole number"),
    (lambda m: m["signature"]["inputs"][0].update(range=[False, 5]), "signature.inputs[0].range[0] should be a whole number"),
    (lambda m: art(m).update(build_seconds=True), "artifacts.onnx-fp32.build_seconds should be a number"),
    (lambda m: art(m).update(requirements={"arch": ["x86_64"]}), "artifacts.onnx-fp32.requirements.arch should be a string"),
    (lambda m: m["model"].update(config="{}"), "model.config should be an object"),
])
def test_strict_types_no_coercion(edit, words):
    raw = valid()
    edit(raw)
    with pytest.raises(BundleError, match=words.replace("[", r"\[")):
        parse_manifest(json.dumps(raw))


@pytest.mark.parametrize("path", ["../outside.bin", "/etc/passwd", "onnx-fp32//model.onnx", "onnx-fp32/./model.onnx",
                                  "onnx-fp32\\model.onnx", "", "onnx-fp32/model\n.onnx"])
def test_file_paths_are_plain_relative_names_inside_the_bundle(path):
    raw = valid()
    art(raw)["files"][0]["path"] = path
    with pytest.raises(BundleError, match=r"files\[0\].path should be a plain relative path inside the bundle"):
        parse_manifest(json.dumps(raw))


def test_parity_fields_are_typed_and_unknown_ones_dropped():
    for edit, words in [({"cases": [1]}, r"parity.cases\[0\] should be an object"),
                        ({"worst": []}, "parity.worst should be an object"),
                        ({"notes": 5}, "parity.notes should be a string"),
                        ({"method": None}, "parity.method should be a string")]:
        raw = valid()
        art(raw)["parity"].update(edit)
        with pytest.raises(BundleError, match=words):
            parse_manifest(json.dumps(raw))
    raw = valid()
    art(raw)["parity"]["reviewer"] = {"anything": [1, "x"]}  # a key this version does not know: not kept
    assert "reviewer" not in parse_manifest(json.dumps(raw)).to_json()


def test_every_refusal_is_one_line_that_names_its_place():
    raw = valid()
    raw["artifacts"]["onnx-fp32\nx"] = "no object"
    art(raw)["files"][0]["size"] = "ten"
    with pytest.raises(BundleError) as err:
        parse_manifest(json.dumps(raw))
    text = str(err.value)
    assert "\n" not in text and text.isprintable() and text.startswith("manifest: ")
    assert "validation error" not in text and "pydantic" not in text and text.endswith("`neat export`")
    from runtimes.manifest import check_file, check_requirements

    with pytest.raises(BundleError, match=r"^manifest: model.reference.size should be at least 0; .*`neat export`$"):
        check_file({"path": "reference/w.safetensors", "sha256": "0" * 64, "size": -3}, "model.reference")
    with pytest.raises(BundleError, match=r"^manifest: artifacts.x.requirements.a\\nb should be a string, a whole"):
        check_requirements({"a\nb": None}, "artifacts.x")
