"""The capture: torch.export once, with the batch dimension dynamic within the spec's bounds.
Every target starts from this ExportedProgram (decomposed where a target needs it)."""
from __future__ import annotations

import contextlib
import copy
import inspect
import warnings
from pathlib import Path

import torch

from exporters.errors import CaptureError
from exporters.spec import ExportSpec


# torch's deprecation notices raised inside its own export, decomposition, ONNX and AOTInductor calls (torch's
# pytree code and Inductor using APIs torch deprecated): nothing a user of this tool can act on.
TORCH_NOISE = ((r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),  # (message regex, category)
               (r"`torch\.jit\.script_method` is deprecated", DeprecationWarning))


@contextlib.contextmanager
def torch_noise_ignored():
    """Around a torch export call: ignore TORCH_NOISE (those messages only; every other warning is kept)."""
    with warnings.catch_warnings():
        for message, category in TORCH_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def example_batch(spec: ExportSpec) -> int:
    """A batch inside the bounds that is not 1 when the batch is dynamic (1 would be specialised)."""
    lo, hi = spec.batch
    return lo if lo == hi else max(lo, 2)


def capture(spec: ExportSpec, device: str = "cpu") -> torch.export.ExportedProgram:
    lo, hi = spec.batch
    example = tuple(t.to(device) for t in spec.example_inputs(example_batch(spec)))
    module = spec.module.eval() if device == "cpu" else copy.deepcopy(spec.module).eval().to(device)
    dynamic = None
    if lo != hi:
        batched = [t.batched for t in (*spec.inputs, *spec.state)]
        dynamic = dynamic_batch(module, batched, torch.export.Dim("batch", min=lo, max=hi))
    try:
        with torch_noise_ignored():
            return torch.export.export(module, example, dynamic_shapes=dynamic, strict=True)
    except Exception as exc:  # torch raises many kinds here; all mean the module is not exportable as is
        raise CaptureError(
            f"torch.export could not capture {spec.name} with batch {lo}..{hi}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Check that forward has no data-dependent "
            f"shapes or Python control flow on tensor values, or export a fixed batch (batch=({hi}, {hi}))"
        ) from exc


def dynamic_batch(module: torch.nn.Module, batched: list[bool], dim) -> tuple:
    """dynamic_shapes marking dim 0 of every batched input, nested as forward's signature is: a `*args`
    parameter takes one tuple for all the inputs it collects."""
    marks = [{0: dim} if b else None for b in batched]
    shapes: list = []
    for p in inspect.signature(module.forward).parameters.values():
        if len(shapes) >= len(marks):
            break
        if p.kind == p.VAR_POSITIONAL:
            shapes.append(tuple(marks[len(shapes):]))
            break
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            shapes.append(marks[len(shapes)])
    return tuple(shapes)


class Captured:
    """The one capture of a spec, with its decompositions computed once and shared by every target."""

    def __init__(self, spec: ExportSpec):
        self.spec = spec
        self.program = capture(spec)
        self._decomposed: dict[str, torch.export.ExportedProgram] = {}
        self._shared: dict = {}
        self.methods: dict[str, Captured] = {}  # the spec's methods' captures, when the build made them

    def shared(self, key, make):
        """What several targets derive alike from this capture (the fp32 ONNX graph: `onnx` and `tensorrt`),
        made by `make()` the first time it is asked for and reused within the export."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def decomposed(self, table: str = "core") -> torch.export.ExportedProgram:
        """'core': the core ATen decompositions; 'none': run_decompositions({}) (coremltools wants that)."""
        if table not in self._decomposed:
            decomp = {} if table == "none" else None
            with torch_noise_ignored():
                self._decomposed[table] = self.program.run_decompositions(decomp)
        return self._decomposed[table]


def source(node) -> str:
    """'file.py:12 `code`' of the innermost frame of a node's stack trace, '' when there is none."""
    lines = [line.strip() for line in (node.meta.get("stack_trace") or "").strip().splitlines()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("File "):
            parts = lines[i].split('"')
            where = f"{Path(parts[1]).name}:{lines[i].split('line ')[-1].split(',')[0]}" if len(parts) > 2 else ""
            code = lines[i + 1] if i + 1 < len(lines) else ""
            return f"{where} `{code}`" if code else where
    return ""


def find_op(program, op: str):
    """The first node of `program` whose op is `op` ('prims.erf_inv', 'aten.erfinv.default', ...), matching
    names without namespace, overload and underscores (a converter may name the op it decomposed to)."""
    def key(name: str) -> str:
        parts = name.split(".")
        return (parts[1] if len(parts) > 1 else parts[0]).replace("_", "")

    for node in program.graph.nodes:
        if node.op == "call_function" and key(str(node.target)) == key(op):
            return node
    return None
