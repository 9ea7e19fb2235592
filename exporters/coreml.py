"""Target `coreml`: an ML program (.mlpackage) converted by coremltools from the decomposed capture.

Options: fp32 or fp16 compute, compute units, the minimum deployment target, optional 8-bit weights
(coremltools.optimize). The model's state (Titans memory etc.) is explicit inputs/outputs, which works on
every deployment target.

Generic modules: ML program I/O holds fp16, fp32 and int32 only, so int64 and bool tensors are declared
int32 at the boundary (the package's `neat.boundary` metadata names them; the runners cast them in and
back out); unbatched tensors keep their full fixed shape. Before conversion the program goes through the
graph passes of exporters.coreml_graph (on a copy: the capture is shared with the other targets). Every
failure is one ConversionError naming the aten op, where it comes from in the module's source, and what
to do.

Verification: on macOS, `MLModel.predict`. Elsewhere, the *saved* .mlpackage is loaded back into a MIL
program and evaluated op by op in NumPy (exporters.coreml_numpy), rounding every fp16 tensor to fp16 as
CoreML computes; an op the evaluator cannot compute makes the verdict "not verified", never "passed".
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from exporters.capture import Captured
from exporters.coreml_graph import lacking, lower_lacking, prepare, source
from exporters.errors import ConversionError
from exporters.target import Built, Execution, execute, versions
from exporters.target import Settings as TargetSettings
from runtimes.backends.coreml import BOUNDARY_KEY, CARRIED, SCALARS_KEY, FILE as PACKAGE

NAME = "coreml"
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_TARGET = "iOS17"
# names coremltools renames silently (to name + "_workaround"): MIL's type names and keywords
RESERVED = {"any", "bool", "program", "func", "tensor", "list", "dict", "tuple", "true", "false", "string",
            "bf16", "fp16", "fp32", "fp64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
            "uint64", "state"}


@dataclass
class Settings(TargetSettings):
    coreml_target: str = DEFAULT_TARGET   # minimum deployment target: iOS16..iOS18, macOS13..macOS15
    compute_units: str = "all"            # all | cpu_only | cpu_and_gpu | cpu_and_ne
    coreml_state: bool = False            # float state as CoreML state (iOS18+/macOS15+, fp16, fixed batch)


def is_available() -> tuple[bool, str]:
    # off macOS coremltools logs that its native (prediction) parts are missing: expected here, not news
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        import coremltools as ct
    except ImportError:
        return False, 'coremltools is not installed: pip install "neat-deploy[coreml]"'
    return True, f"coremltools {ct.__version__}"


def deployment_target(ct, name: str):
    target = getattr(ct.target, name, None)
    if target is None:
        choices = ", ".join(t for t in dir(ct.target) if t[:3] in ("iOS", "mac"))
        raise ConversionError(f"unknown CoreML deployment target {name!r}; choose one of {choices}")
    return target


def convert(cap: Captured, settings: Settings):
    import coremltools as ct

    spec, program = _rank0_as_1(cap)
    ins, outs = spec.names
    lo, hi = spec.batch
    batch = ct.RangeDim(lower_bound=lo, upper_bound=hi, default=lo) if lo != hi else lo
    infos = dict(zip(ins, (*spec.inputs, *spec.state)))
    inputs = [ct.TensorType(name=n, shape=_shape(t, batch), dtype=io_dtype(t.dtype)) for n, t in infos.items()]
    out_infos = dict(zip(outs, (*spec.outputs, *spec.state)))
    outputs = [ct.TensorType(name=n, dtype=io_dtype(t.dtype)) for n, t in out_infos.items()]
    check_names(ins, outs)
    compute_precision, kept = compute_precision_of(ct, settings.precision, spec.fp32_scopes)
    model = convert_program(ct, program, spec.name, inputs=inputs, outputs=outputs,
                            minimum_deployment_target=deployment_target(ct, settings.coreml_target),
                            compute_precision=compute_precision,
                            compute_units=getattr(ct.ComputeUnit, settings.compute_units.upper()))
    if kept is not None and not kept[0]:
        raise ConversionError(f"no op matches the fp32 scopes {spec.fp32_scopes}: the model's source changed")
    if settings.precision == "int8":  # weights of matmuls, convolutions, embeddings (not masks or small constants)
        opt = ct.optimize.coreml
        w8 = opt.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", weight_threshold=2048)
        config = opt.OptimizationConfig(op_type_configs={t: w8 for t in ("linear", "matmul", "gather", "conv")})
        with contextlib.redirect_stderr(io.StringIO()):
            model = opt.linear_quantize_weights(model, config=config)
    mark_boundary(model, {**infos, **out_infos}, out_infos)
    return model


class Rank0As1(torch.nn.Module):
    """forward with the inputs at `positions` taken as shape (1,) and given to the module as 0-d tensors."""

    def __init__(self, inner: torch.nn.Module, positions: list[int]):
        super().__init__()
        self.inner, self.positions = inner, frozenset(positions)

    def forward(self, *args):
        return self.inner(*(a.reshape(()) if i in self.positions else a for i, a in enumerate(args)))


def _rank0_as_1(cap: Captured):
    """(spec, program to convert): CoreML has no rank-0 tensors, so 0-d inputs travel as shape (1,) (the
    runners reshape them: runtimes.backends.coreml.to_boundary) through a capture of `Rank0As1`."""
    spec = cap.spec
    state0 = [t.name for t in spec.state if not t.batched and t.shape == ()]
    if state0:
        raise ConversionError(f"CoreML has no rank-0 tensors: state {state0} is 0-d; keep it as shape (1,) in "
                              "the module, or export another target (exported, onnx, cpu)")
    at = [i for i, t in enumerate(spec.inputs) if not t.batched and t.shape == ()]
    if not at:
        return spec, cap.decomposed("none")
    flat = dataclasses.replace(
        spec, module=Rank0As1(spec.module, at), methods={}, decode={},
        inputs=tuple(dataclasses.replace(t, shape=(1,)) if i in at else t for i, t in enumerate(spec.inputs)),
        examples=None if spec.examples is None else tuple(x.reshape(1) if i in at else x
                                                           for i, x in enumerate(spec.examples)))
    return flat, cap.shared("coreml-rank0", lambda: Captured(flat).decomposed("none"))


def check_names(ins, outs) -> None:
    """Refuse names that coremltools would change: the runners and the manifest go by the spec's names."""
    reserved = sorted((set(ins) | set(outs)) & RESERVED)
    if reserved:
        raise ConversionError(f"CoreML reserves the names {reserved} (MIL type names); rename those inputs or "
                              "outputs in the spec")
    odd = sorted(n for n in (*ins, *outs) if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n))
    if odd:
        raise ConversionError(f"CoreML names are [a-zA-Z][a-zA-Z0-9_]*, not {odd}: rename those inputs or "
                              "outputs in the spec")


def _shape(t, batch) -> tuple:
    """The CoreML shape of a tensor: the batch (an int or a RangeDim) first when it is batched."""
    return (batch, *t.shape) if t.batched else tuple(t.shape)


def mark_boundary(model, infos: dict, out_infos: dict) -> None:
    """Record which tensors travel as int32 but are declared int64 or bool, for the runners to cast, and
    which outputs are 0-d, for the runners to reshape."""
    carried = {n: t.dtype for n, t in infos.items() if t.dtype in CARRIED}
    if carried:
        model.user_defined_metadata[BOUNDARY_KEY] = json.dumps(carried)
    scalar = [n for n, t in out_infos.items() if not t.batched and t.shape == ()]
    if scalar:  # CoreML returns them as shape (1,): the runners give them back 0-d
        model.user_defined_metadata[SCALARS_KEY] = json.dumps(scalar)


class _Log(logging.Handler):
    """Collects what coremltools logs while converting: it names the op that failed and where."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage().strip())


def convert_program(ct, program, what: str, **kwargs):
    """ct.convert of the prepared program, as one typed error: an op coremltools has no conversion for is
    named with the place in the module's source it comes from; any other failure names the op being
    converted when it failed."""
    try:
        program = prepare(lower_lacking(program))
    except Exception as exc:  # a torch.fx / torch.export internals change: say so instead of a traceback
        raise ConversionError(f"could not prepare {what}'s program for coremltools: {type(exc).__name__}: "
                              f"{exc}. Export another target (exported, onnx, cpu) and report this") from exc
    missing = lacking(program)
    if missing:
        raise ConversionError(
            f"CoreML cannot convert {what}: coremltools {ct.__version__} has no conversion for "
            + "; ".join(f"{op} (at {where})" if where else op for op, where in missing.items())
            + ". Rewrite that part of the module with supported ops, or export another target "
              "(exported, onnx, cpu)")
    log, logger = _Log(), logging.getLogger("coremltools")
    logger.addHandler(log)
    try:  # coremltools draws progress bars and warns about torch versions: neither helps a user here
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return ct.convert(program, convert_to="mlprogram", **kwargs)
    except Exception as exc:  # coremltools raises many kinds; all mean the program did not convert
        first = (str(exc).strip().splitlines() or [""])[0].rstrip(".")
        where = _failed_op(program, log.lines) or _inputs_named(first, kwargs.get("inputs", ()))
        raise ConversionError(f"coremltools could not convert {what}{where}: "
                              f"{type(exc).__name__}: {first}. Rewrite that op in the module, or export "
                              "another target (exported, onnx, cpu)") from exc
    finally:
        logger.removeHandler(log)


def _inputs_named(message: str, inputs) -> str:
    """' (inputs: x (2, 3), ...)' when coremltools' message is about an input it does not name, else ''."""
    if "input" not in message.lower() or not inputs:
        return ""
    def dims(t) -> str:
        shape = [str(d) if isinstance(d, int) else f"{d.lower_bound}..{d.upper_bound}" for d in t.shape.shape]
        return "(" + ", ".join(shape) + ("," if len(shape) == 1 else "") + ")"

    return " (inputs: " + ", ".join(f"{i.name} {dims(i)}" for i in inputs) + ")"


def _failed_op(program, log_lines: list[str]) -> str:
    """' at aten.op (file.py:12 `code`)' for the node coremltools logged as failing, '' when none was."""
    for line in log_lines:
        m = re.search(r"converting '([^']+)' op \(located at: '([^']*)'\)", line)
        if m:
            node = next((n for n in program.graph.nodes if n.name == m.group(2)), None)
            if node is None:
                return f" at op {m.group(1)}"
            where = source(node)
            return f" at {node.target}" + (f" ({where})" if where else "")
        m = re.search(r"'([^']+)' graph pass", line)
        if m:
            return f" in its graph pass {m.group(1)}"
    return ""


def compute_precision_of(ct, precision: str, fp32_scopes: tuple[str, ...]):
    """(compute precision, counter of ops kept fp32): fp32, or fp16 except for the ops whose torch source
    matches one of `fp32_scopes`."""
    if precision != "fp16":
        return ct.precision.FLOAT32, None
    if not fp32_scopes:
        return ct.precision.FLOAT16, None
    from coremltools.converters.mil.mil.scope import ScopeSource

    def in_fp16(op) -> bool:
        trace = "".join(s for s in op.scopes.get(ScopeSource.EXIR_STACK_TRACE, []) if s)
        keep = any(fragment in trace for fragment in fp32_scopes)
        kept[0] += keep
        return not keep

    kept = [0]
    return ct.transform.FP16ComputePrecision(op_selector=in_fp16), kept


def io_dtype(name: str):
    """The dtype a tensor has at the CoreML boundary: ML program I/O holds fp16, fp32 and int32 only, so
    int64 and bool travel as int32 (coremltools would otherwise turn int64 into int32 and bool into fp32
    silently); the runners cast them back (runtimes.backends.coreml)."""
    import numpy as np

    return {"int32": np.int32, "int64": np.int32, "bool": np.int32, "float32": np.float32,
            "float16": np.float16}[name]


def export(cap: Captured, out: Path, settings: Settings) -> Built:
    from exporters.coreml_state import convert_stateful

    model = convert_stateful(cap, settings) if settings.coreml_state else convert(cap, settings)
    model.save(str(out / PACKAGE))
    return Built(
        toolchain=versions("torch", "coremltools"),
        requirements={"deployment_target": settings.coreml_target, "os": ["macOS", "iOS"],
                      "compute_units": settings.compute_units},
        settings={"coreml_target": settings.coreml_target, "compute_units": settings.compute_units,
                  "compute_precision": ("fp16, fp32 for " + ", ".join(cap.spec.fp32_scopes)
                                        if settings.precision == "fp16" and cap.spec.fp32_scopes else
                                        "fp16" if settings.precision == "fp16" else "fp32"),
                  "weights": "int8" if settings.precision == "int8" else settings.precision,
                  "state": "CoreML state (fp16), integer state as inputs/outputs" if settings.coreml_state
                  else "explicit inputs/outputs",
                  "boundary": _boundary_note(cap.spec)},
    )


def _boundary_note(spec) -> str:
    """What the CoreML boundary does to the spec's tensors, e.g. "int64 carried as int32"."""
    dtypes = sorted({t.dtype for t in (*spec.inputs, *spec.state, *spec.outputs)} & set(CARRIED))
    return ", ".join(f"{d} carried as int32" for d in dtypes) or "as declared"


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    from runtimes.backends import coreml as backend
    from runtimes.profile import detect

    if not backend.problem(requirements, detect()):
        return execute(NAME, artifact_dir, requirements, "executed: CoreML MLModel.predict on macOS")
    from exporters import coreml_numpy

    try:
        run = coreml_numpy.load(artifact_dir / PACKAGE)
    except coreml_numpy.Unsupported as exc:
        return Execution(None, f"not verified: {exc}", "not verified")
    return Execution(run, "evaluated off-device: the saved ML program, op by op in NumPy")
