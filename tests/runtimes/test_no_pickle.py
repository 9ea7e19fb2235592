"""Issue 14, "no pickle on any load path": a pickle (or code) planted anywhere in an exported bundle's model.pt2
never runs on `runtimes.load(bundle, backend="exported-fp32")`; the load either works or raises a typed error."""
import hashlib
import io
import json
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import runtimes
from runtimes.errors import RuntimeLayerError

sys.path.insert(0, str(Path(__file__).parents[1] / "exporters"))
from toy import H, T, VOCAB, toy_spec  # noqa: E402

torch.set_num_threads(1)
ART = "exported-fp32"
PT2 = f"{ART}/model.pt2"


class Payload:
    """Unpickling this creates `marker` (stands for any code an attacker would run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def raw_pickle(marker) -> bytes:
    return pickle.dumps(Payload(marker))


def torch_pickle(marker) -> bytes:
    buf = io.BytesIO()
    torch.save({"x": Payload(marker)}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from exporters.build import export_bundle

    out = tmp_path_factory.mktemp("nopickle") / "bundle"
    (outcome,) = export_bundle(toy_spec(), ["exported"], out, "fp32", {})
    assert outcome.verdict == "passed", outcome
    return out


def members(bundle: Path) -> dict:
    with zipfile.ZipFile(bundle / PT2) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def tampered(bundle: Path, dst: Path, edit) -> Path:
    """A copy of `bundle` whose model.pt2 members are `edit(dict of name -> bytes)`, its manifest re-hashed so the
    integrity check passes and only the loader stands between the payload and the interpreter."""
    shutil.copytree(bundle, dst)
    files = members(bundle)
    edit(files)
    with zipfile.ZipFile(dst / PT2, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    manifest = json.loads((dst / "manifest.json").read_text())
    data = (dst / PT2).read_bytes()
    for f in manifest["artifacts"][ART]["files"]:
        if f["path"] == PT2:
            f.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst


def load_or_refuse(path: Path, marker: Path) -> None:
    try:
        runtimes.load(path, backend=ART)
    except RuntimeLayerError as exc:
        assert "model.pt2" in str(exc) and ("re-export" in str(exc) or "neat export" in str(exc)), exc
    assert not marker.exists(), "the planted payload ran"


def test_member_names_are_the_ones_planted(bundle):
    """The parametrization below covers every member torch.export.save writes for this model."""
    names = {n.split("/", 1)[1] for n in members(bundle)}
    assert names == set(MEMBERS)


MEMBERS = ["archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
           "models/model.json", "data/weights/model_weights_config.json", "data/constants/model_constants_config.json",
           "data/sample_inputs/model.pt"] + [f"data/weights/weight_{i}" for i in range(5)]


@pytest.mark.parametrize("form", [raw_pickle, torch_pickle], ids=["pickle", "torch.save"])
@pytest.mark.parametrize("member", MEMBERS)
def test_pickle_in_any_member_never_runs(bundle, tmp_path, member, form):
    marker = tmp_path / "pwned"

    def plant(files):
        files[f"model/{member}"] = form(marker)

    load_or_refuse(tampered(bundle, tmp_path / "b", plant), marker)


def _config(files, name):
    return json.loads(files[f"model/data/{name}"])


def _pickled_weight(marker):
    def edit(files):
        cfg = _config(files, "weights/model_weights_config.json")
        meta = next(iter(cfg["config"].values()))
        meta["use_pickle"] = True
        files["model/data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
        files[f"model/data/weights/{meta['path_name']}"] = torch_pickle(marker)
    return edit


def _constant(prefix):
    def make(marker):
        def edit(files):
            cfg = {"config": {"c": {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True,
                                    "tensor_meta": None}}}
            files["model/data/constants/model_constants_config.json"] = json.dumps(cfg).encode()
            files[f"model/data/constants/{prefix}0"] = raw_pickle(marker)
        return edit
    return make


def _extra_member(name):
    def make(marker):
        def edit(files):
            files[f"model/{name}"] = torch_pickle(marker)
        return edit
    return make


def _legacy_layout(marker):
    """The pre-2.8 archive: torch.export.load falls back to it when the PT2 reader fails."""
    def edit(files):
        program = files["model/models/model.json"]
        files.clear()
        files.update({"version": b"8.20", "serialized_exported_program.json": program})
        for name in ("state_dict", "constants", "example_inputs"):
            files[f"serialized_{name}.pt"] = torch_pickle(marker)
    return edit


def _set_exprs(x, code):
    if isinstance(x, dict):
        for k, v in x.items():
            x[k] = code if k == "expr_str" else _set_exprs(v, code)
    elif isinstance(x, list):
        x[:] = [_set_exprs(v, code) for v in x]
    return x


def _json_code(field):
    def make(marker):
        code = f"__import__('builtins').open({str(marker)!r}, 'w') is None"

        def edit(files):
            doc = json.loads(files["model/models/model.json"])
            if field == "guards_code":
                doc["guards_code"] = [code]
            else:
                _set_exprs(doc, code)
            files["model/models/model.json"] = json.dumps(doc).encode()
        return edit
    return make


CRAFTED = {
    "weight flagged use_pickle": _pickled_weight,
    "tensor constant flagged use_pickle": _constant("tensor_"),
    "opaque object constant (pickle.loads)": _constant("opaque_obj_"),
    "torchbind object constant": _constant("custom_obj_"),
    "legacy pickled weights file": _extra_member("data/weights/model.pt"),
    "legacy pickled constants file": _extra_member("data/constants/model.pt"),
    "AOTInductor package member": _extra_member("data/aotinductor/model/model.wrapper.so"),
    "pre-2.8 archive layout": _legacy_layout,
    "code in guards_code": _json_code("guards_code"),
    "code in a symbolic expression": _json_code("expr_str"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_archives_never_run_code(bundle, tmp_path, case):
    marker = tmp_path / "pwned"
    load_or_refuse(tampered(bundle, tmp_path / "b", CRAFTED[case](marker)), marker)


def test_the_payload_does_run_through_torch_export_load(bundle, tmp_path):
    """Control: the same planted sample inputs DO run code through torch.export.load (what the backend used)."""
    marker = tmp_path / "pwned"

    def plant(files):
        files["model/data/sample_inputs/model.pt"] = torch_pickle(marker)

    path = tampered(bundle, tmp_path / "b", plant)
    try:
        torch.export.load(str(path / PT2))
    except Exception:
        pass
    assert marker.exists()


def test_normal_bundle_loads_and_runs_identically(bundle):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (2, T), dtype=np.int32)
    state = [rng.standard_normal((2, H)).astype(np.float32)]
    logits, (h,) = runtimes.load(bundle, backend=ART).run(tokens, state)
    ref = torch.export.load(str(bundle / PT2)).module()  # the previous loader, on a trusted file
    with torch.no_grad():
        ref_logits, ref_h = ref(torch.from_numpy(tokens), torch.from_numpy(state[0]))
    np.testing.assert_array_equal(logits, ref_logits.numpy())
    np.testing.assert_array_equal(h, ref_h.numpy())
