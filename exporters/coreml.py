"""Target `coreml`: an ML program (.mlpackage) converted by coremltools from the decomposed capture.

Options: fp32 or fp16 compute, compute units, the minimum deployment target, optional 8-bit weights
(coremltools.optimize). The model's state (Titans memory etc.) is explicit inputs/outputs, which works on
every deployment target.

Verification: on macOS, `MLModel.predict`. Elsewhere, the *saved* .mlpackage is loaded back into a MIL
program and evaluated op by op in NumPy (runtimes.coreml_eval), rounding every fp16 tensor to fp16 as
CoreML computes; an op the evaluator cannot compute makes the verdict "not verified", never "passed".
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

from exporters.capture import Captured
from exporters.errors import ConversionError
from exporters.target import Built, Execution, versions
from runtimes.coreml import PACKAGE

NAME = "coreml"
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_TARGET = "iOS17"
RESERVED = {"state", "tensor", "fp16", "fp32", "int32", "bool", "list"}  # names coremltools renames silently


@dataclass
class Settings:
    coreml_target: str = DEFAULT_TARGET   # minimum deployment target: iOS16..iOS18, macOS13..macOS15
    compute_units: str = "all"            # all | cpu_only | cpu_and_gpu | cpu_and_ne
    coreml_state: bool = False            # float state as CoreML state (iOS18+/macOS15+, fp16, fixed batch)


STATE_ORDER_KEY = "neat.signature"  # package metadata: full input/state/output order, for stateful packages


def is_available() -> tuple[bool, str]:
    # off macOS coremltools logs that its native (prediction) parts are missing: expected here, not news
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        import coremltools as ct
    except ImportError:
        return False, 'coremltools is not installed: pip install "neat-deploy[coreml]"'
    return True, f"coremltools {ct.__version__}"


def _target(ct, name: str):
    target = getattr(ct.target, name, None)
    if target is None:
        choices = ", ".join(t for t in dir(ct.target) if t[:3] in ("iOS", "mac"))
        raise ConversionError(f"unknown CoreML deployment target {name!r}; choose one of {choices}")
    return target


class _Stateful:
    """Builds a module whose float state lives in buffers that forward() updates in place: coremltools
    turns those into CoreML states. Integer state (CoreML states are fp16 only) stays explicit I/O."""

    @staticmethod
    def wrap(spec, batch: int):
        import torch

        float_names = [t.name for t in spec.state if t.dtype.startswith("float")]
        n_in = len(spec.inputs)

        class Stateful(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = spec.module
                for t, value in zip(spec.state, spec.init_state(batch)):
                    if t.name in float_names:
                        self.register_buffer(t.name, value.clone())

            def forward(self, *args):
                inputs, io_state = list(args[:n_in]), iter(args[n_in:])
                state = [getattr(self, t.name) if t.name in float_names else next(io_state) for t in spec.state]
                outs = self.inner(*inputs, *state)
                n_out = len(spec.outputs)
                io_new = []
                for t, new in zip(spec.state, outs[n_out:]):
                    if t.name in float_names:
                        getattr(self, t.name).copy_(new)
                    else:
                        io_new.append(new)
                return (*outs[:n_out], *io_new)

        return Stateful().eval(), float_names


def _check_stateful(ct, spec, precision: str, settings: Settings) -> None:
    if precision != "fp16":
        raise ConversionError("CoreML state holds fp16 only: export with --precision fp16 --coreml-state")
    if spec.batch[0] != spec.batch[1]:
        raise ConversionError("CoreML state has a fixed shape: export with a fixed batch, e.g. --batch 1")
    if _target(ct, settings.coreml_target).value < ct.target.iOS18.value:
        raise ConversionError(f"CoreML state needs iOS 18 / macOS 15 or newer, not {settings.coreml_target}: "
                              "add --coreml-target iOS18")


def convert_stateful(cap: Captured, precision: str, settings: Settings):
    import coremltools as ct
    import torch

    spec = cap.spec
    _check_stateful(ct, spec, precision, settings)
    batch = spec.batch[0]
    module, float_names = _Stateful.wrap(spec, batch)
    io_infos = [t for t in spec.state if t.name not in float_names]
    example = (*spec.random_inputs(batch, 0), *[s for t, s in zip(spec.state, spec.init_state(batch))
                                                 if t.name not in float_names])
    program = torch.export.export(module, example, strict=True).run_decompositions({})
    inputs = [ct.TensorType(name=t.name, shape=(batch, *t.shape), dtype=_np_dtype(t.dtype))
              for t in (*spec.inputs, *io_infos)]
    outputs = [ct.TensorType(name=t.name, dtype=_np_dtype(t.dtype)) for t in spec.outputs]
    outputs += [ct.TensorType(name=f"new_{t.name}", dtype=_np_dtype(t.dtype)) for t in io_infos]
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=(batch, *t.shape), dtype=_np_dtype("float16")),
                           name=t.name) for t in spec.state if t.name in float_names]
    compute_precision, _ = _precision(ct, precision, spec.fp32_scopes)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            model = ct.convert(program, inputs=inputs, outputs=outputs, states=states, convert_to="mlprogram",
                               minimum_deployment_target=_target(ct, settings.coreml_target),
                               compute_precision=compute_precision,
                               compute_units=getattr(ct.ComputeUnit, settings.compute_units.upper()))
    except Exception as exc:  # coremltools raises many kinds; all mean the program did not convert
        raise ConversionError(f"coremltools could not convert {spec.name} with CoreML state: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    ins, outs = spec.names
    model.user_defined_metadata[STATE_ORDER_KEY] = json.dumps({"inputs": list(ins), "outputs": list(outs)})
    return model


def convert(cap: Captured, precision: str, settings: Settings):
    import coremltools as ct

    spec = cap.spec
    ins, outs = spec.names
    lo, hi = spec.batch
    batch = ct.RangeDim(lower_bound=lo, upper_bound=hi, default=lo) if lo != hi else lo
    infos = (*spec.inputs, *spec.state)
    inputs = [ct.TensorType(name=n, shape=(batch, *t.shape), dtype=_np_dtype(t.dtype)) for n, t in zip(ins, infos)]
    out_infos = (*spec.outputs, *spec.state)
    outputs = [ct.TensorType(name=n, dtype=_np_dtype(t.dtype)) for n, t in zip(outs, out_infos)]  # fp32 I/O
    if set(ins) & RESERVED:
        raise ConversionError(f"CoreML reserves the input names {sorted(set(ins) & RESERVED)}; rename them")
    compute_precision, kept = _precision(ct, precision, spec.fp32_scopes)
    try:  # coremltools draws progress bars and warns about torch versions: neither helps a user here
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            model = ct.convert(
                cap.decomposed("none"), inputs=inputs, outputs=outputs, convert_to="mlprogram",
                minimum_deployment_target=_target(ct, settings.coreml_target),
                compute_precision=compute_precision,
                compute_units=getattr(ct.ComputeUnit, settings.compute_units.upper()),
            )
    except ConversionError:
        raise
    except Exception as exc:  # coremltools raises many kinds; all mean the program did not convert
        raise ConversionError(f"coremltools could not convert {spec.name}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if kept is not None and not kept[0]:
        raise ConversionError(f"no op matches the fp32 scopes {spec.fp32_scopes}: the model's source changed")
    if precision == "int8":  # weights of the matmuls and embeddings only (not masks or small constants)
        opt = ct.optimize.coreml
        w8 = opt.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", weight_threshold=2048)
        config = opt.OptimizationConfig(op_type_configs={t: w8 for t in ("linear", "matmul", "gather")})
        with contextlib.redirect_stderr(io.StringIO()):
            model = opt.linear_quantize_weights(model, config=config)
    return model


def _precision(ct, precision: str, fp32_scopes: tuple[str, ...]):
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


def _np_dtype(name: str):
    import numpy as np

    return {"int32": np.int32, "float32": np.float32, "float16": np.float16}[name]


def export(cap: Captured, out: Path, precision: str, settings: Settings) -> Built:
    model = (convert_stateful if settings.coreml_state else convert)(cap, precision, settings)
    model.save(str(out / PACKAGE))
    return Built(
        toolchain=versions("torch", "coremltools"),
        requirements={"deployment_target": settings.coreml_target, "os": ["macOS", "iOS"],
                      "compute_units": settings.compute_units},
        settings={"coreml_target": settings.coreml_target, "compute_units": settings.compute_units,
                  "compute_precision": ("fp16, fp32 for " + ", ".join(cap.spec.fp32_scopes)
                                        if precision == "fp16" and cap.spec.fp32_scopes else
                                        "fp16" if precision == "fp16" else "fp32"),
                  "weights": "int8" if precision == "int8" else precision,
                  "state": "CoreML state (fp16), integer state as inputs/outputs" if settings.coreml_state
                  else "explicit inputs/outputs"},
    )


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    from runtimes import coreml as runtime

    if platform.system() == "Darwin":
        return Execution(runtime.load(artifact_dir), "executed: CoreML MLModel.predict on macOS")
    from runtimes import coreml_eval

    try:
        run = coreml_eval.load(artifact_dir / PACKAGE)
    except coreml_eval.Unsupported as exc:
        return Execution(None, f"not verified: {exc}", "not verified")
    return Execution(run, "evaluated off-device: the saved ML program, op by op in NumPy")
