"""`neat export triton`: a Triton model repository from a bundle (exporters.triton). Triton does not run here;
every config.pbtxt is parsed with tritonclient's model-config protobuf and checked against the manifest."""
import copy
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason='the triton extra: pip install "neat-deploy[triton]"')

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from exporters.triton import RepositoryError, check_config, config_text, export_repository  # noqa: E402
from neat.cli import main  # noqa: E402
from runtimes.bundle import read_manifest  # noqa: E402
from runtimes.manifest import sha256_file  # noqa: E402


def _parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_cli_writes_a_repository_with_the_sequence_batcher_and_implicit_state(rnn_bundle, tmp_path):
    repo = tmp_path / "repo"
    res = CliRunner().invoke(main, ["export", "triton", str(rnn_bundle), "--out", str(repo)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "NOT executed here" in res.output and f"tritonserver --model-repository {repo}" in res.output
    assert "exported-fp32: skipped" in res.output
    model = repo / "byte-rnn-onnx-fp32"
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == [
        "byte-rnn-onnx-fp32", "byte-rnn-onnx-fp32/1", "byte-rnn-onnx-fp32/1/model.onnx", "byte-rnn-onnx-fp32/config.pbtxt"]
    assert sha256_file(model / "1" / "model.onnx") == sha256_file(rnn_bundle / "onnx-fp32" / "model.onnx")
    cfg = _parse(model / "config.pbtxt")
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("byte-rnn-onnx-fp32", "onnxruntime_onnx", 4)
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input] == [
        ("tokens", "TYPE_INT32", [8])]  # the state is not a request input: Triton carries it
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("logits", [8, 256])]
    (state,) = cfg.sequence_batching.state
    assert (state.input_name, state.output_name, model_config_pb2.DataType.Name(state.data_type), list(state.dims)) \
        == ("h", "new_h", "TYPE_FP32", [4])
    assert state.initial_state[0].zero_data and list(state.initial_state[0].dims) == [4]
    assert not list(tmp_path.glob(".*partial"))  # the temporary directory was renamed into place


def test_a_nonzero_initial_state_is_written_as_a_data_file(rnn_bundle, tmp_path):
    from safetensors.numpy import save_file

    bundle = tmp_path / "bundle"
    shutil.copytree(rnn_bundle, bundle)
    h0 = np.arange(4, dtype=np.float32)[None] / 10
    init = bundle / "signature" / "init_state.safetensors"
    save_file({"h": h0}, str(init))
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["signature"]["init_state"].update(sha256=sha256_file(init), size=init.stat().st_size)
    (bundle / "manifest.json").write_text(json.dumps(raw))
    repo = export_repository(bundle, tmp_path / "repo")
    model = repo.path / "byte-rnn-onnx-fp32"
    init_cfg = _parse(model / "config.pbtxt").sequence_batching.state[0].initial_state[0]
    assert init_cfg.data_file == "initial_h"
    assert np.array_equal(np.frombuffer((model / "initial_state" / "initial_h").read_bytes(), np.float32), h0[0])


def test_the_check_catches_a_config_that_disagrees_with_the_manifest(rnn_bundle):
    manifest = read_manifest(rnn_bundle)
    art = manifest.artifacts["onnx-fp32"]
    text = config_text(manifest, art, "m", {"h": ""})
    check_config(text, manifest, "m", "onnxruntime_onnx")
    for bad, what in ((text.replace("dims: [ 8, 256 ]", "dims: [ 8, 255 ]"), "output logits dims"),
                      (text.replace('output_name: "new_h"', 'output_name: "h_out"'), "output_name"),
                      (text.replace("TYPE_INT32", "TYPE_INT64"), "data_type"),
                      (text.replace("zero_data: true", ""), "no initial data"),
                      (text.replace("max_batch_size: 4", "max_batch_siz: 4"), "does not parse")):
        with pytest.raises(RepositoryError, match=what):
            check_config(bad, manifest, "m", "onnxruntime_onnx")


def test_unbatched_tensors_give_full_shapes_and_no_triton_batching(rnn_bundle):
    manifest = copy.deepcopy(read_manifest(rnn_bundle))
    manifest.signature["state"].append({"name": "count", "dtype": "int64", "shape": [1]})  # no batch dimension
    text = config_text(manifest, manifest.artifacts["onnx-fp32"], "m", {"h": "", "count": ""})
    cfg = check_config(text, manifest, "m", "onnxruntime_onnx")
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [-1, 8]
    assert [list(s.dims) for s in cfg.sequence_batching.state] == [[-1, 4], [1]]
    assert [list(s.initial_state[0].dims) for s in cfg.sequence_batching.state] == [[1, 4], [1]]


def test_bad_input_is_a_typed_error_naming_the_fix(rnn_bundle, tmp_path):
    with pytest.raises(RepositoryError, match="neat export"):
        export_repository(tmp_path / "nothing", tmp_path / "repo")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(RepositoryError, match="remove it, or give another --out"):
        export_repository(rnn_bundle, tmp_path / "full")
    with pytest.raises(RepositoryError, match="inside the bundle"):
        export_repository(rnn_bundle, rnn_bundle / "triton")

    only_pt2 = tmp_path / "pt2"  # a bundle without an artifact Triton serves
    shutil.copytree(rnn_bundle, only_pt2)
    raw = json.loads((only_pt2 / "manifest.json").read_text())
    del raw["artifacts"]["onnx-fp32"]
    (only_pt2 / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(RepositoryError, match="neat export onnx"):
        export_repository(only_pt2, tmp_path / "repo")

    damaged = tmp_path / "damaged"
    shutil.copytree(rnn_bundle, damaged)
    with open(damaged / "onnx-fp32" / "model.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(RepositoryError, match="integrity check.*neat export onnx"):
        export_repository(damaged, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() and not list(tmp_path.glob(".repo*"))  # nothing half-written

    res = CliRunner().invoke(main, ["export", "triton", str(rnn_bundle)])
    assert res.exit_code == 2 and "--out REPO" in res.output
