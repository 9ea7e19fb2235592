"""A Triton Inference Server model repository from a bundle (`neat export triton BUNDLE --out REPO`).

One Triton model per ONNX artifact (`platform: "onnxruntime_onnx"`) and per TensorRT engine built with the
data-center TensorRT (`platform: "tensorrt_plan"`): `<model>/config.pbtxt` and `<model>/1/model.onnx` (or
`model.plan`), hard-linked from the bundle where the file system allows, copied otherwise. A stateful model
gets Triton's **sequence batcher with implicit state**: each state tensor of the manifest is declared as a
`state { input_name output_name data_type dims initial_state }`, so Triton feeds the state output of one
request back as the state input of the next request of the same sequence id (the client sends only the
tokens and a sequence id), starting from the bundle's initial state (`zero_data` when it is all zeros, else
its bytes in `<model>/initial_state/<name>`).

Triton itself is not run here (it ships as a container). Every config.pbtxt written is parsed back with
tritonclient's model-config protobuf and its names, data types and dims checked against the manifest before
the repository is moved into place; the repository is built in a temporary sibling directory and renamed.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporters.errors import ExportError, TargetUnavailable
from runtimes.backends.onnx import OPTIMIZED
from runtimes.bundle import Manifest, read_init_state, read_manifest, resolve_inside, verify_files
from runtimes.errors import RuntimeLayerError
from runtimes.manifest import Artifact

VERSION = "1"  # the model version directory Triton loads
TYPES = {"int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL", "float32": "TYPE_FP32",
         "float16": "TYPE_FP16"}
PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
RUN_HINT = ("docker run --rm -p 8000:8000 -p 8001:8001 -v {repo}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
            "tritonserver --model-repository /models")


class RepositoryError(ExportError):
    """The bundle cannot be written as a Triton model repository (say why, and what to do)."""


@dataclass
class TritonModel:
    name: str             # the Triton model name (its directory)
    artifact: str         # the bundle artifact it serves, e.g. onnx-fp32
    platform: str
    stateful: bool


@dataclass
class Repository:
    path: Path
    models: list[TritonModel] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # artifact key -> why it has no Triton model

    def __str__(self) -> str:
        lines = [f"Triton model repository -> {self.path}"]
        for m in self.models:
            lines.append(f"  {m.name}: {m.platform} ({m.artifact})" + (
                ", sequence batcher with implicit state" if m.stateful else ""))
        for key, why in self.skipped.items():
            lines.append(f"  {key}: skipped ({why})")
        lines.append("Every config.pbtxt was parsed with tritonclient's model-config protobuf and checked against the "
                     "manifest. It is NOT executed here (Triton ships as a container); run it with:")
        lines.append("  tritonserver --model-repository " + str(self.path))
        lines.append("  e.g. " + RUN_HINT.format(repo=self.path.resolve()))
        return "\n".join(lines)


def _model_config_pb2():
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise TargetUnavailable(f"checking a Triton model configuration needs tritonclient ({exc}): "
                                'pip install "neat-deploy[triton]"') from None
    return model_config_pb2, text_format


def model_name(manifest: Manifest, key: str) -> str:
    """A Triton model name for one artifact: the model's name and the artifact key, [A-Za-z0-9_-] only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{manifest.model.get('name') or 'model'}-{key}")


def _batched(info: dict) -> bool:
    return bool(info["shape"]) and info["shape"][0] == "batch"


def _layout(sig: dict) -> tuple[int, bool]:
    """(max_batch_size, whether dims leave out the batch dimension). Triton batches along dim 0 only when every
    input, state and output has it; otherwise max_batch_size 0 and the full shapes (batch as -1)."""
    tensors = sig["inputs"] + sig["state"] + sig["outputs"]
    if tensors and all(_batched(t) for t in tensors):
        return int(sig.get("dynamic", {}).get("batch", {}).get("max", 1)), True
    return 0, False


def _dims(info: dict, drop_batch: bool) -> list[int]:
    shape = info["shape"][1:] if drop_batch else info["shape"]
    return [d if isinstance(d, int) else -1 for d in shape]  # a named (dynamic) dimension is -1


def _dims_text(dims: list[int]) -> str:
    return "[ " + ", ".join(map(str, dims)) + " ]"


def _dtype(info: dict, where: str) -> str:
    if info["dtype"] not in TYPES:
        raise RepositoryError(f"{where} {info['name']!r} has dtype {info['dtype']}, which Triton has no type for; "
                              "re-export the bundle with this version")
    return TYPES[info["dtype"]]


def config_text(manifest: Manifest, art: Artifact, name: str, initial: dict[str, str]) -> str:
    """The config.pbtxt of one artifact. initial: state name -> its data file name ('' for zero data)."""
    sig = manifest.signature
    platform, filename = PLATFORMS[art.target]
    max_batch, drop = _layout(sig)
    out = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch}",
           f'default_model_filename: "{filename}"']
    for kind, infos in (("input", sig["inputs"]), ("output", sig["outputs"])):
        out.append(f"{kind} [")
        out.append(",\n".join(f'  {{ name: "{t["name"]}" data_type: {_dtype(t, kind)} dims: {_dims_text(_dims(t, drop))} }}'
                              for t in infos))
        out.append("]")
    if sig["state"]:
        out.append("sequence_batching {")
        out.append("  state [")
        states = []
        for t in sig["state"]:
            dims = _dims(t, drop)
            init_dims = [1 if d == -1 else d for d in dims]  # an initial state has a concrete shape
            data = f'data_file: "{initial[t["name"]]}"' if initial[t["name"]] else "zero_data: true"
            states.append(f'    {{ input_name: "{t["name"]}" output_name: "new_{t["name"]}" '
                          f"data_type: {_dtype(t, 'state')} dims: {_dims_text(dims)}\n"
                          f'      initial_state: {{ name: "initial_{t["name"]}" data_type: {_dtype(t, "state")} '
                          f"dims: {_dims_text(init_dims)} {data} }} }}")
        out.append(",\n".join(states))
        out.append("  ]")
        out.append("}")
    elif max_batch > 0:
        out.append("dynamic_batching { }")
    return "\n".join(out) + "\n"


def check_config(text: str, manifest: Manifest, name: str, platform: str):
    """Parse a config.pbtxt with tritonclient's ModelConfig protobuf and check it against the manifest: the
    model's name and platform, every input and output (the state ones as implicit state), in order, by name,
    data type and dims. Returns the parsed ModelConfig; RepositoryError naming the first difference."""
    pb2, text_format = _model_config_pb2()
    cfg = pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        raise RepositoryError(f"config.pbtxt of {name} does not parse as a Triton ModelConfig ({exc}); "
                              "this is a bug in exporters/triton.py") from None
    sig = manifest.signature
    max_batch, drop = _layout(sig)

    def same(what: str, got, want) -> None:
        if got != want:
            raise RepositoryError(f"config.pbtxt of {name}: {what} is {got!r}, the manifest says {want!r}; "
                                  "this is a bug in exporters/triton.py")

    same("name", cfg.name, name)
    same("platform", cfg.platform, platform)
    same("max_batch_size", cfg.max_batch_size, max_batch)
    for kind, got, infos in (("input", cfg.input, sig["inputs"]), ("output", cfg.output, sig["outputs"])):
        same(f"the {kind} names", [t.name for t in got], [t["name"] for t in infos])
        for t, info in zip(got, infos):
            same(f"{kind} {t.name} data_type", pb2.DataType.Name(t.data_type), TYPES[info["dtype"]])
            same(f"{kind} {t.name} dims", list(t.dims), _dims(info, drop))
    states = list(cfg.sequence_batching.state)
    same("the implicit state inputs", [s.input_name for s in states], [t["name"] for t in sig["state"]])
    for s, info in zip(states, sig["state"]):
        same(f"state {s.input_name} output_name", s.output_name, f"new_{info['name']}")
        same(f"state {s.input_name} data_type", pb2.DataType.Name(s.data_type), TYPES[info["dtype"]])
        same(f"state {s.input_name} dims", list(s.dims), _dims(info, drop))
        same(f"state {s.input_name} initial states", len(s.initial_state), 1)
        init = s.initial_state[0]
        same(f"state {s.input_name} initial_state data_type", init.data_type, s.data_type)
        same(f"state {s.input_name} initial_state dims", list(init.dims), [1 if d == -1 else d for d in s.dims])
        if init.WhichOneof("state_data") is None:
            raise RepositoryError(f"config.pbtxt of {name}: state {s.input_name} has no initial data; "
                                  "this is a bug in exporters/triton.py")
    if sig["state"] and not cfg.HasField("sequence_batching"):
        raise RepositoryError(f"config.pbtxt of {name}: a stateful model without the sequence batcher")
    return cfg


def _graph_problem(path: Path, sig: dict) -> str:
    """How an ONNX file's graph inputs and outputs differ from the manifest's names ('' when they match, or
    when the onnx package is not installed)."""
    try:
        import onnx
    except ImportError:
        return ""
    graph = onnx.load(str(path), load_external_data=False).graph
    want_in = [t["name"] for t in sig["inputs"]] + [t["name"] for t in sig["state"]]
    want_out = [t["name"] for t in sig["outputs"]] + [f"new_{t['name']}" for t in sig["state"]]
    got_in, got_out = [i.name for i in graph.input], [o.name for o in graph.output]
    if got_in != want_in or got_out != want_out:
        return f"its graph has inputs {got_in} and outputs {got_out}, the manifest lists {want_in} and {want_out}"
    return ""


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _skip_reason(art: Artifact) -> str:
    if art.target not in PLATFORMS:
        return f"Triton serves ONNX and TensorRT artifacts, not {art.target}"
    if art.parity.verdict == "failed":
        return "its verification failed"
    if art.target == "tensorrt" and art.requirements.get("flavour") != "tensorrt":
        return (f"built with {art.requirements.get('flavour') or 'an unknown TensorRT'}, whose engines Triton's "
                "TensorRT backend cannot load; Triton serves the ONNX artifact instead, or build a TensorRT engine "
                "with `neat export tensorrt` on a machine with the data-center TensorRT of your Triton release")
    return ""


def export_repository(bundle: str | Path, out: str | Path) -> Repository:
    """Write the Triton model repository of `bundle` to `out` (which must not exist, or be empty)."""
    bundle, out = Path(bundle), Path(out)
    try:
        manifest = read_manifest(bundle)
    except RuntimeLayerError as exc:
        raise RepositoryError(str(exc)) from None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RepositoryError(f"{out} already exists and is not an empty directory: remove it, or give another "
                              "--out (a repository is written whole, never merged into another)")
    if out.resolve() == bundle.resolve() or bundle.resolve() in out.resolve().parents:
        raise RepositoryError(f"--out {out} is inside the bundle {bundle}: give a directory outside it")
    repo = Repository(out)
    chosen = []
    for key, art in manifest.artifacts.items():
        why = _skip_reason(art)
        if why:
            repo.skipped[key] = why
        else:
            chosen.append(art)
    if not chosen:
        raise RepositoryError(f"{bundle} has no artifact Triton can serve ({'; '.join(f'{k}: {w}' for k, w in repo.skipped.items()) or 'no artifacts'}): "
                              f"add one with `neat export onnx --out {bundle}`")
    sig = manifest.signature
    init = dict(zip((t["name"] for t in sig["state"]), read_init_state(bundle, manifest))) if sig["state"] else {}
    _, drop = _layout(sig)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the server (often another user, in a container) reads it
    try:
        for art in chosen:
            try:
                verify_files(bundle, art)
            except RuntimeLayerError as exc:
                raise RepositoryError(str(exc)) from None
            platform, filename = PLATFORMS[art.target]
            name = model_name(manifest, art.key)
            top = [f for f in art.files if len(Path(f.path).parts) == 2  # <key>/<file>: not a method's files,
                   and Path(f.path).name != OPTIMIZED]  # nor the graph our CPU backend loads (Triton optimizes its own)
            main = [f for f in top if Path(f.path).name == filename]
            if not main:
                raise RepositoryError(f"artifact {art.key} has no {filename}; re-export it with `neat export {art.target}`")
            if art.target == "onnx":
                why = _graph_problem(resolve_inside(bundle, main[0].path), sig)
                if why:
                    raise RepositoryError(f"artifact {art.key}: {why}; re-export it with `neat export onnx`")
            version = work / name / VERSION
            version.mkdir(parents=True)
            for f in top:  # the model file, and any external data beside it
                _link(resolve_inside(bundle, f.path), version / Path(f.path).name)
            initial = {}
            for t in sig["state"]:
                value = init[t["name"]]
                if not value.any():
                    initial[t["name"]] = ""
                    continue
                initial[t["name"]] = f"initial_{t['name']}"
                (work / name / "initial_state").mkdir(exist_ok=True)
                one = value[0] if drop else value  # one sequence's state, row-major
                (work / name / "initial_state" / initial[t["name"]]).write_bytes(np.ascontiguousarray(one).tobytes())
            text = config_text(manifest, art, name, initial)
            check_config(text, manifest, name, platform)
            (work / name / "config.pbtxt").write_text(text)
            repo.models.append(TritonModel(name, art.key, platform, bool(sig["state"])))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return repo
