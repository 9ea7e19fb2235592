"""Target `executorch`: one ExecuTorch program (model.pte) lowered with the XNNPACK partitioner, holding the
chunk forward and every method of the spec as named methods of that one program (ExecuTorch programs carry
several methods natively, and their weights once).

Layout: `<artifact>/model.pte` with methods "forward" and each spec method by its name, and a small
`program.json` in the artifact directory and in each `<artifact>/<method>/` naming the program file and the
method (`{"program": "../model.pte", "method": "step"}`): the bundle keeps its one-directory-per-method
layout, the weights are stored once. The whole program is lowered when the chunk forward is built (from the
build's captures of the methods, `Captured.methods`); each method's build only writes its pointer.

fp32 only: what XNNPACK does not take runs on ExecuTorch's portable kernels, in f32. (int8 through the PT2E
quantizer is not built: not verified here.) Verified by running the .pte through ExecuTorch's runtime
bindings (executorch.runtime), as an application would (the backend of the same name).

Not in `neat export all`'s default set: executorch is an optional extra and lowering every method takes long;
`neat export executorch` builds it. The CoreML delegate path (on a Mac) is described in README.md, not built.
"""
from __future__ import annotations

import copy
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from exporters.capture import Captured, torch_noise_ignored
from exporters.errors import ConversionError, ExportError
from exporters.target import Built, Execution, execute, versions
from exporters.target import Settings as TargetSettings

NAME = "executorch"
PRECISIONS = ("fp32",)
NOT_IN_ALL = ("left out of `all` (an optional extra, and lowering every method takes long): "
              "`neat export executorch` builds it")
INSTALL = 'pip install "neat-deploy[executorch]"'


@dataclass
class Settings(TargetSettings):
    pass


def is_available() -> tuple[bool, str]:
    try:
        import executorch.exir  # noqa: F401
    except ImportError:
        return False, f"executorch is not installed: {INSTALL}"
    from runtimes.backends import executorch as backend

    return backend.is_available()


def export(cap: Captured, out: Path, settings: Settings) -> Built:
    from runtimes.backends.executorch import FILE, INDEX, PROGRAM

    parent = _index(out.parent)
    if out.name in parent.get("methods", ()):  # a method of the program the chunk forward's build lowered
        (out / INDEX).write_text(json.dumps({"program": f"../{PROGRAM}", "method": out.name}))
        return Built(toolchain=_toolchain(), requirements=parent["requirements"],
                     settings={"program": f"../{PROGRAM}", "method": out.name})
    if "forward" in cap.spec.methods:
        raise ExportError("a method named 'forward' would clash with the chunk forward in the ExecuTorch "
                          "program: rename the method")
    programs = {"forward": cap.program}
    if cap.spec.methods:  # the build's captures of them (captured here when it made none): one program holds all
        caps = cap.methods or cap.shared("executorch methods",
                                         lambda: {n: Captured(m) for n, m in cap.spec.methods.items()})
        programs.update({n: c.program for n, c in caps.items()})
    (out / PROGRAM).write_bytes(lower(programs, cap.spec.name))
    from runtimes.profile import _installed_version

    requirements = {"executorch": (_installed_version("executorch") or "").split("+")[0], "precision": settings.precision,
                    "delegate": "xnnpack"}
    (out / FILE).write_text(json.dumps({"program": PROGRAM, "method": "forward", "methods": sorted(programs),
                                        "requirements": requirements}))
    return Built(toolchain=_toolchain(), requirements=requirements,
                 settings={"delegate": "xnnpack", "methods": sorted(programs)})


def _toolchain() -> dict:
    from runtimes.profile import _installed_version

    return {**versions("torch"), "executorch": _installed_version("executorch")}


def _index(folder: Path) -> dict:
    from runtimes.backends.executorch import INDEX

    f = folder / INDEX
    return json.loads(f.read_text()) if f.is_file() else {}


def lower(programs: dict, name: str = "the model") -> bytes:
    """ExportedPrograms by method name -> the bytes of one .pte, lowered with the XNNPACK partitioner."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with torch_noise_ignored(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # executorch's own dataclass/enum notices
            before = {m: _shapes(ep) for m, ep in programs.items()}
            # lowering specialises shapes in the programs' own shape environment: copies, the capture is shared
            edge = to_edge_transform_and_lower({m: copy.deepcopy(ep) for m, ep in programs.items()},
                                               partitioner=[XnnpackPartitioner()])
            fixed = {m: _fixed(before[m], _shapes(edge.exported_program(m))) for m in programs}
            if not any(fixed.values()):
                return edge.to_executorch().buffer
    except Exception as exc:  # exir raises SpecViolationError, RuntimeError and others: not lowerable
        text = str(exc)
        op = re.search(r"(?:aten|prims|torch\.ops\.\w+)[.:]+\w+(?:\.\w+)?", text)
        first = (text.strip().splitlines() or [""])[0][:300]
        raise ConversionError(
            f"ExecuTorch could not lower {name}{f' (op {op.group(0)})' if op else ''}: {type(exc).__name__}: "
            f"{first}. Export another target (cpu, onnx)") from exc
    where = "; ".join(f"{m}: {', '.join(f)}" for m, f in fixed.items() if f)
    raise ConversionError(f"ExecuTorch's edge lowering of {name} fixed dimensions the capture keeps dynamic ({where}): "
                          "export a fixed batch (batch=(N, N)), or another target (cpu, onnx)")


def _shapes(ep) -> list[list[str]]:
    """Each user input's dimensions as text ('s27' symbolic, '2' constant: a SymInt of a constant prints as one)."""
    users = set(ep.graph_signature.user_inputs)
    return [[str(d) for d in n.meta["val"].shape] for n in ep.graph.nodes
            if n.op == "placeholder" and n.name in users and hasattr(n.meta.get("val"), "shape")]


def _fixed(before: list, after: list) -> list[str]:
    """'input 0 dim 0 = 2' for each user-input dimension symbolic before lowering and a constant after."""
    return [f"input {i} dim {d} = {b}" for i, (s0, s1) in enumerate(zip(before, after))
            for d, (a, b) in enumerate(zip(s0, s1)) if not a.isdigit() and b.isdigit()]


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    return execute(NAME, artifact_dir, requirements, "executed: ExecuTorch runtime (XNNPACK delegate, CPU)")
