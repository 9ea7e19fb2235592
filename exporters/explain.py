"""Where an artifact starts to disagree with its reference: divergence localisation.

    report = exporters.explain(model, (x,), "coreml")              # a target: built here, then explained
    report = exporters.explain(model, (x,), "bundle/onnx-fp32")    # or an artifact: .onnx, .mlpackage, its dir
    print(report)                                                  # the first ops out of tolerance, and where

The reference (the captured ExportedProgram, run node by node by torch.fx's Interpreter) and the artifact
run on the same inputs; every intermediate value both sides name alike is compared (the error relative to
the reference's scale, as verification measures it), and the report names the first ops whose error leaves
the precision's tolerance while the values they read were within it: the aten op, the module it is in, its
source line (the capture's stack trace), the error before and after it. What each target shows:
`onnx`: every value (extra graph outputs, run in ONNX Runtime); `coreml`: every MIL var (the NumPy
evaluator runs op by op); `exported`: the reference itself, exact; `cpu`/`cuda` (AOTInductor) and
`tensorrt`: compiled kernels, no intermediate values to read.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from exporters.capture import Captured, example_batch
from exporters.errors import ExportError
from exporters.explain_values import coreml_values, onnx_values, reference_values

OPAQUE = {"cpu": "AOTInductor", "cuda": "AOTInductor", "tensorrt": "TensorRT"}
UNREAD = {"mlx": "an MLX program", "openvino": "an OpenVINO IR",
          "executorch": "an ExecuTorch program"}  # could be read; not done yet
FIRST = 5  # divergences reported


class ExplainError(ExportError):
    """The artifact cannot be explained (an unknown kind of file, or one the evaluator cannot run)."""


@dataclass
class Divergence:
    node: str          # the FX node (and the artifact's value of the same name)
    op: str            # aten.mul.Tensor
    module: str        # the submodule it is in: layers.13.act ('' at the top)
    source: str        # file.py:12 `code`
    before: float      # the largest error among the values it reads
    after: float       # the error of its own output

    def __str__(self) -> str:
        where = " ".join(x for x in (f"in {self.module}" if self.module else "", f"at {self.source}"
                                     if self.source else "") if x)
        return f"{self.op} (%{self.node}) {where}: error {self.before:.3g} before, {self.after:.3g} after"


@dataclass
class Explanation:
    target: str
    precision: str
    tolerance: float
    compared: int = 0                      # values compared along the graph
    divergences: list[Divergence] = field(default_factory=list)
    worst_output: float = 0.0             # the largest error among the compared graph outputs
    note: str = ""                         # why nothing could be compared, or what else to know
    stream: object = None                  # explain_stream.Stream: the error along the long stream (state)

    def __str__(self) -> str:
        head = f"explain {self.target}-{self.precision} (tolerance {self.tolerance:g}, {self.compared} values compared)"
        if self.note:
            head += f": {self.note}"
        tail = f"\n{self.stream}" if self.stream is not None else ""
        if not self.divergences:
            return head + ("" if self.note or not self.compared else ": every compared value within tolerance") + tail
        lines = [head + "; first ops out of tolerance:"]
        lines += [f"  {i}. {d}" for i, d in enumerate(self.divergences, 1)]
        return "\n".join(lines) + tail


def tolerance_of(precision: str) -> float:
    from exporters.verify import TOLERANCES

    return TOLERANCES[precision].error or 0.1  # int8 is held to a cosine: a relative error of 0.1 stands in


def _error(ref: np.ndarray, got: np.ndarray) -> float | None:
    """The error of `got` against `ref` relative to the reference's scale; None when they cannot be lined up."""
    if ref.shape != got.shape:
        if ref.size != got.size:
            return None
        got = got.reshape(ref.shape)
    if ref.dtype.kind in "biu" or got.dtype.kind in "biu":
        return 0.0 if np.array_equal(ref.astype(np.int64), got.astype(np.int64)) else float("inf")
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    keep = np.isfinite(ref)
    if not keep.any():
        return 0.0
    diff = np.abs(ref - got)[keep]
    if not np.isfinite(got[keep]).all():
        return float("inf")
    return float(diff.max(initial=0.0)) / max(1.0, float(np.abs(ref[keep]).max()))


def _user_source(node) -> str:
    """'file.py:12 `code`' of the innermost frame of the node's stack trace that is neither torch's nor the
    exporters' own (their wrappers), '' when there is none (an op inside a torch.nn module: see its module)."""
    import exporters

    skip = (str(Path(torch.__file__).parent), str(Path(exporters.__file__).parent))
    lines = (node.meta.get("stack_trace") or "").strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if line.startswith("File ") and '"' in line and not line.split('"')[1].startswith(skip):
            file, number = Path(line.split('"')[1]).name, line.split("line ")[-1].split(",")[0]
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"{file}:{number} `{code}`" if code else f"{file}:{number}"
    return ""


def _module(node, wrapped: int = 0) -> str:
    """The path of the submodule a node comes from, without the `wrapped` wrappers' `inner.` the exporters
    put around the user's module (exporters.probe)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0].replace("L['self'].", "").replace("L['self']", "")
    for _ in range(wrapped):
        path = path[len("inner."):] if path.startswith("inner.") else "" if path == "inner" else path
    return path


def _wrappers(module) -> int:
    """How many of the exporters' wrappers (an `inner` attribute, exporters.probe / coreml) hold the module."""
    from exporters.coreml import Rank0As1
    from exporters.probe import Flat, Lifted

    k = 0
    while isinstance(module, (Flat, Lifted, Rank0As1)):
        module, k = module.inner, k + 1
    return k


def localise(program, ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: float,
             first: int = FIRST, wrapped: int = 0) -> tuple[int, list[Divergence], float]:
    """(values compared, the first divergences in graph order, worst output error): a node diverges first
    when its own error exceeds `tol` and the largest error among the values it reads (through nodes the
    artifact has no value for) does not."""
    err: dict[str, float] = {}
    reach: dict[str, float] = {}  # the error a node carries: its own where compared, else what it reads
    found: list[Divergence] = []
    compared = 0
    for node in program.graph.nodes:
        before = max((reach.get(a.name, 0.0) for a in node.all_input_nodes), default=0.0)
        e = _error(ref[node.name], got[node.name]) if node.name in ref and node.name in got else None
        if e is None:
            reach[node.name] = before
            continue
        compared += 1
        err[node.name] = reach[node.name] = e
        if e > tol and before <= tol and node.op == "call_function" and len(found) < first:
            found.append(Divergence(node.name, str(node.target), _module(node, wrapped), _user_source(node), before, e))
    worst = max((reach.get(a.name, 0.0) for a in program.graph.output_node().all_input_nodes), default=0.0)
    if not found:  # no clean first step (errors that grow slowly): the largest jumps instead
        jumps = sorted(((e / max(max((reach.get(a.name, 0.0) for a in n.all_input_nodes), default=0.0), 1e-12), n)
                        for n in program.graph.nodes if (e := err.get(n.name, 0.0)) > tol
                        and n.op == "call_function"), key=lambda x: -x[0])
        for _, n in jumps[:first]:
            b = max((reach.get(a.name, 0.0) for a in n.all_input_nodes), default=0.0)
            found.append(Divergence(n.name, str(n.target), _module(n, wrapped), _user_source(n), b, err[n.name]))
    return compared, found, worst


def _kind(artifact) -> tuple[str, Path | None]:
    """(target kind, file) of an artifact path or a target name."""
    if isinstance(artifact, str) and not Path(artifact).exists():
        return artifact, None
    path = Path(artifact)
    if path.suffix == ".onnx":
        return "onnx", path
    if path.suffix == ".mlpackage":
        return "coreml", path
    if path.is_dir():
        for name, kind in (("model.onnx", "onnx"), ("model.mlpackage", "coreml")):
            if (path / name).exists():
                return kind, path / name
        if (path / "model.pt2").exists():
            return "exported", path / "model.pt2"
    raise ExplainError(f"{artifact}: not an artifact explain can read; give an .onnx file, an .mlpackage, an "
                       "artifact directory of a bundle (onnx-fp32/, coreml-fp32/), or a target name")


def explain_captured(cap: Captured, artifact, precision: str = "fp32", inputs: tuple | None = None,
                     first: int = FIRST) -> Explanation:
    """Explain an artifact built from `cap` (a target name builds it into a temporary directory)."""
    kind, path = _kind(artifact)
    tol = tolerance_of(precision)
    report = Explanation(kind, precision, tol)
    if kind in OPAQUE:
        report.note = (f"{OPAQUE[kind]} compiles the graph into kernels: no intermediate value can be read. "
                       "Explain the onnx or coreml artifact of the same capture to see where values part")
        return report
    if kind == "exported":
        report.note = "the ExportedProgram is the reference itself: exact by construction"
        return report
    if kind in UNREAD:
        report.note = (f"explain does not read {UNREAD[kind]}'s intermediate values yet: explain the onnx "
                       "artifact of the same capture (OpenVINO converts from it) to see where values part")
        return report
    if kind not in ("onnx", "coreml"):
        raise ExplainError(f"unknown target {kind!r}: explain onnx, coreml, exported, cpu, cuda or tensorrt")
    if path is None:
        from exporters.registry import TARGETS

        with tempfile.TemporaryDirectory() as tmp:
            target = TARGETS[kind]
            target.export(cap, Path(tmp), target.Settings(precision=precision))
            return explain_captured(cap, Path(tmp), precision, inputs, first)
    spec = cap.spec
    inputs = tuple(inputs) if inputs is not None else spec.example_inputs(example_batch(spec))
    report.compared, report.divergences, report.worst_output = localise_at(cap, kind, path, inputs, tol, first)
    if not report.compared:
        report.note = "no value of the artifact is named like a node of the capture: nothing to compare"
    elif spec.state and spec.long_stream_chunks:
        from exporters.explain_stream import explain_stream

        report.stream = explain_stream(cap, kind, path, tol, first)
        if not report.divergences and report.stream.divergences:
            report.divergences = report.stream.divergences
    return report


def localise_at(cap: Captured, kind: str, path: Path, inputs: tuple, tol: float, first: int = FIRST,
                only=None) -> tuple[int, list[Divergence], float]:
    """localise() of the artifact at `path` (onnx or coreml) against the capture on the flat `inputs`
    (*inputs, *state); `only(program) -> names`: compare only those nodes' values."""
    ins, _ = cap.spec.names
    feeds = {n: x.detach().cpu().numpy() for n, x in zip(ins, inputs)}
    if kind == "onnx":
        program = _onnx_program(cap)
        ref = reference_values(program, inputs)
        got = onnx_values(path, set(ref), feeds)
    else:
        program = _coreml_program(cap)
        ref = reference_values(program, inputs)
        try:
            got = coreml_values(path, feeds)
        except Exception as exc:
            raise ExplainError(f"the CoreML evaluator could not run {path}: {exc}") from exc
    _, outs = cap.spec.names  # graph outputs are named after the spec, not after the nodes that make them
    for node, name in zip(program.graph.output_node().args[0], outs):
        if isinstance(node, torch.fx.Node) and node.name not in got and name in got:
            got[node.name] = got[name]
    if only is not None:
        keep = only(program)
        got = {k: v for k, v in got.items() if k in keep}
    return localise(program, ref, got, tol, first, _wrappers(cap.spec.module))


def explain_failure(cap: Captured, artifact, precision: str) -> str:
    """The explain report of an artifact that failed verification, as one text for the failure message;
    never raises (an explanation that cannot be made says why, the verdict stands as it is)."""
    try:
        return str(explain_captured(cap, artifact, precision))
    except Exception as exc:  # the evaluator, ONNX Runtime or torch internals: none of it may hide the verdict
        return f"explain could not run: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def explain_bundle(bundle, spec, keys=()) -> dict[str, Explanation]:
    """{artifact key: its explanation} for the artifacts of `bundle` (those `keys` names, default all),
    against `spec` (the module the bundle was exported from), captured once."""
    from runtimes.bundle import read_manifest

    bundle, manifest = Path(bundle), read_manifest(Path(bundle))
    unknown = [k for k in keys if k not in manifest.artifacts]
    if unknown:
        raise ExplainError(f"{bundle} has no artifact {', '.join(map(repr, unknown))}; it has "
                           f"{', '.join(manifest.artifacts) or 'none'}")
    cap = Captured(spec)
    out = {}
    for key, art in manifest.artifacts.items():
        if keys and key not in keys:
            continue
        out[key] = explain_captured(cap, bundle / key if art.target in ("onnx", "coreml") else art.target,
                                    art.precision)
    return out


def _onnx_program(cap: Captured):
    """The program the dynamo ONNX exporter translates (its own decompositions and type promotions), whose
    node names the ONNX values keep; the capture itself where torch's internals have moved."""
    from exporters.onnx import float_clamp_bounds

    program = float_clamp_bounds(cap.program)
    try:
        from torch.onnx._internal.exporter import _core, _registration

        registry = _registration.ONNXRegistry.from_torchlib()
        return _core._prepare_exported_program_for_export(program, registry=registry)
    except (ImportError, AttributeError, TypeError):
        return program


def _coreml_program(cap: Captured):
    """The program coremltools converted (exporters.coreml), whose node names the MIL vars keep."""
    from exporters.coreml import _rank0_as_1
    from exporters.coreml_graph import lower_lacking, prepare

    return prepare(lower_lacking(_rank0_as_1(cap)[1]))


def explain(module: torch.nn.Module, example_inputs=(), artifact="onnx", *, precision: str = "fp32",
            first: int = FIRST, **options) -> Explanation:
    """Where `artifact` (a target name, or an .onnx / .mlpackage / artifact directory exported from this
    module with the same options) first departs from `module` on `example_inputs`. `options` are
    exporters.describe's (batch=, state=, ...)."""
    from exporters.api import describe

    spec = describe(module, example_inputs, **options)
    return explain_captured(Captured(spec), artifact, precision, first=first)
