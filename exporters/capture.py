"""The capture: torch.export once, with the batch dimension dynamic within the spec's bounds.
Every target starts from this ExportedProgram (decomposed where a target needs it)."""
from __future__ import annotations

import copy
import inspect

import torch

from exporters.errors import CaptureError
from exporters.spec import ExportSpec


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
        dynamic = dynamic_batch(module, len(example), torch.export.Dim("batch", min=lo, max=hi))
    try:
        return torch.export.export(module, example, dynamic_shapes=dynamic, strict=True)
    except Exception as exc:  # torch raises many kinds here; all mean the module is not exportable as is
        raise CaptureError(
            f"torch.export could not capture {spec.name} with batch {lo}..{hi}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Check that forward has no data-dependent "
            "shapes or Python control flow on tensor values, or export a fixed batch (--batch N:N)"
        ) from exc


def dynamic_batch(module: torch.nn.Module, n_inputs: int, dim) -> tuple:
    """dynamic_shapes marking dim 0 of every input, nested as forward's signature is: a `*state`
    parameter takes one tuple for all the inputs it collects."""
    shapes: list = []
    for p in inspect.signature(module.forward).parameters.values():
        if len(shapes) >= n_inputs:
            break
        if p.kind == p.VAR_POSITIONAL:
            shapes.append(tuple({0: dim} for _ in range(n_inputs - len(shapes))))
            break
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            shapes.append({0: dim})
    return tuple(shapes)


class Captured:
    """The one capture of a spec, with its decompositions computed once and shared by every target."""

    def __init__(self, spec: ExportSpec):
        self.spec = spec
        self.program = capture(spec)
        self._decomposed: dict[str, torch.export.ExportedProgram] = {}

    def decomposed(self, table: str = "core") -> torch.export.ExportedProgram:
        """'core': the core ATen decompositions; 'none': run_decompositions({}) (coremltools wants that)."""
        if table not in self._decomposed:
            decomp = {} if table == "none" else None
            self._decomposed[table] = self.program.run_decompositions(decomp)
        return self._decomposed[table]
