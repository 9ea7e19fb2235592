"""The interpreter of the CoreML evaluator: a MIL program run op by op in NumPy, with the NumPy versions of
exporters.coreml_numpy.ops where there is one, else through the op's own `value_inference()`; nested
blocks (cond, while_loop) and iOS18 states included.

fp16 emulation: every fp16 Var is held as a float32 array whose values are rounded to fp16 after the op
that produces it (compute in fp32, round each op output to fp16, which is what the Core ML CPU/GPU
backends do up to accumulation order); an op that only moves or picks values (ops.PICKING: its fp16 inputs'
values are fp16 values already) skips the rounding. Results are returned in the declared output dtype.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from exporters.coreml_numpy.ops import CUSTOM, PICKING
from runtimes.errors import EvaluationUnsupported

logging.getLogger("coremltools").setLevel(logging.ERROR)  # off macOS it logs its missing native parts
with warnings.catch_warnings():  # coremltools warns about untested torch versions on import
    warnings.simplefilter("ignore")
    from coremltools.converters.mil.mil import types


# ----------------------------------------------------------------------------------------------
# 1. binding values to Vars so that op.value_inference() can read them as var.val
# ----------------------------------------------------------------------------------------------
class _Box:
    """Stands in for a Var's builtin sym_val: Var.val / Var.sym_val return box.val unchanged
    (the real builtin tensor setter would cast fp16 arrays to np.float16, which we do not want)."""

    __slots__ = ("val",)

    def __init__(self, val):
        self.val = val


def _is_fp16(var) -> bool:
    try:
        return var.dtype == types.fp16
    except Exception:
        return False


def _np_dtype(var):
    return types.nptype_from_builtin(var.dtype)


def _kind_of(var) -> tuple:
    """(fp16, NumPy dtype, tensor) of a Var: what its working representation is."""
    fp16 = _is_fp16(var)
    return fp16, (np.float32 if fp16 else _np_dtype(var)), types.is_tensor(var.sym_type)


def _work(arr, var, kinds: dict | None = None, rounded: bool = False):
    """The working representation of a value of `var`: fp16 -> float32 holding fp16-rounded values;
    other tensors -> ndarray of the declared dtype; scalars -> NumPy scalar; str/bool/lists untouched.
    kinds: a cache of each Var's _kind_of (by id, for Vars of one live program). rounded: the values are
    fp16 values already (an op that only moves or picks its fp16 inputs' values), no rounding needed."""
    if isinstance(arr, (str, bytes, list, tuple)) or arr is None:
        return arr
    if kinds is None:
        fp16, want, tensor = _kind_of(var)
    else:
        kind = kinds.get(id(var))
        if kind is None:
            kind = kinds[id(var)] = _kind_of(var)
        fp16, want, tensor = kind
    if fp16:
        a = np.asarray(arr, dtype=np.float32) if rounded else np.asarray(arr, dtype=np.float16).astype(np.float32)
        return a if tensor else a[()]
    if tensor:
        return np.asarray(arr).astype(want, copy=False)
    if isinstance(arr, np.ndarray) and arr.ndim == 0:
        arr = arr[()]
    if want in (bool, np.bool_):
        return bool(arr)  # numpy 2 rejects np.bool_ for keepdims= etc. in some value_inference code
    return want(arr) if isinstance(arr, (np.generic, int, float, bool)) else arr


def _bind(var, value):
    var._sym_val = _Box(value)


# ----------------------------------------------------------------------------------------------
# 2. running a program
# ----------------------------------------------------------------------------------------------
class Unsupported(EvaluationUnsupported):
    """The program holds an op this evaluator cannot compute (verdict: not verified)."""


class Stats:
    """Ops run, by type: through value_inference (builtin), through ops.CUSTOM (custom); and the
    value_inference failures that fell back to CUSTOM (failed: op type -> error)."""

    def __init__(self):
        self.builtin, self.custom, self.failed = {}, {}, {}


def _run_op(op, stats: Stats, prefer_builtin: bool):
    t = op.op_type
    vals = None
    if t.startswith("constexpr_") and (prefer_builtin or t not in CUSTOM):
        # compressed weights: coremltools' own decompression (value_inference is deliberately absent)
        stats.builtin[t] = stats.builtin.get(t, 0) + 1
        return (op.materialized_val_inference(),)
    if prefer_builtin or t not in CUSTOM:
        try:
            vals = op.value_inference()
            stats.builtin[t] = stats.builtin.get(t, 0) + 1
        except Exception as exc:  # NotImplementedError or a failure on our inputs
            if t not in CUSTOM:
                raise Unsupported(f"op {op.name} ({t}): no value_inference and no NumPy fallback: "
                                   f"{type(exc).__name__}: {exc}") from exc
            stats.failed[t] = f"{type(exc).__name__}: {str(exc)[:120]}"
            vals = None
    if vals is None:
        vals = CUSTOM[t](op)
        stats.custom[t] = stats.custom.get(t, 0) + 1
    if not isinstance(vals, (tuple, list)):
        vals = (vals,)
    return vals


def _retype(op):
    """Re-run the op's type inference on the now concrete inputs, so that value_inference code that reads
    static shapes (expand_dims, tile, reshape...) sees the real batch instead of a RangeDim symbol."""
    out_types = op.type_inference()
    if not isinstance(out_types, tuple):
        out_types = (out_types,)
    for var, t in zip(op.outputs, out_types):
        var._sym_type = t


class _Run:
    """One evaluation: the stats, whether to prefer value_inference, whether ops must be re-typed (an input
    shape changed), the states, and the program's cache of Var kinds."""

    def __init__(self, stats: Stats, prefer_builtin: bool, retype: bool, states: dict | None, kinds: dict):
        self.stats, self.prefer_builtin, self.retype, self.states, self.kinds = (stats, prefer_builtin, retype,
                                                                                 states, kinds)


def run_block(block, run: _Run):
    kinds = run.kinds
    for op in block.operations:
        t = op.op_type
        if t == "const":
            # loaded consts hold their value: bound once in working form (fp16 -> fp32 values), then kept
            out = op.outputs[0]
            if not isinstance(out._sym_val, _Box):
                _bind(out, _work(out.val, out, kinds))
            continue
        if t == "read_state":  # iOS18 states: the value lives in `states`, keyed by state name
            _bind(op.outputs[0], _work(run.states[op.input.name], op.outputs[0], kinds))
            continue
        if t == "coreml_update_state":
            v = _work(op.value.val, op.outputs[0], kinds)
            run.states[op.state.name] = v
            _bind(op.outputs[0], v)
            continue
        if op.blocks:
            vals = _run_control_flow(op, run)
        else:
            if run.retype:
                _retype(op)
            vals = _run_op(op, run.stats, run.prefer_builtin)
        rounded = t in PICKING
        for var, v in zip(op.outputs, vals):
            _bind(var, _work(v, var, kinds, rounded))


def _block_values(block):
    return [v._sym_val.val for v in block.outputs]


def _run_control_flow(op, run: _Run):
    """Nested blocks: cond (blocks = [true, false], no block inputs) and while_loop
    (blocks = [cond, body], each with block.inputs bound to the current loop vars)."""
    if op.op_type == "cond":
        block = op.blocks[0] if bool(np.asarray(op.pred.val)) else op.blocks[1]
        run_block(block, run)
        return _block_values(block)
    if op.op_type == "while_loop":
        cond_b, body_b = op.blocks
        cur = [v._sym_val.val for v in op.loop_vars]
        for _ in range(1 << 20):
            for var, v in zip(cond_b.inputs, cur):
                _bind(var, v)
            run_block(cond_b, run)
            if not bool(np.asarray(_block_values(cond_b)[0])):
                return cur
            for var, v in zip(body_b.inputs, cur):
                _bind(var, v)
            run_block(body_b, run)
            cur = [_work(v, var, run.kinds) for v, var in zip(_block_values(body_b), body_b.outputs)]
        raise RuntimeError(f"while_loop {op.name} did not terminate")
    raise Unsupported(f"control flow op {op.op_type} ({op.name}) is not supported by this evaluator")


def evaluate(prog, feeds: dict, prefer_builtin: bool = False, stats: Stats | None = None,
             states: dict | None = None):
    """feeds: input name -> np.ndarray. Returns {output name: np.ndarray} in the declared dtypes.
    states (iOS18 stateful programs): state name -> np.ndarray, read and updated in place."""
    stats = stats or Stats()
    fn = prog.functions["main"]
    if not hasattr(prog, "_declared_shapes"):  # before any specialisation: symbols mark dynamic dims
        prog._declared_shapes = {n: tuple(v.shape) for n, v in fn.inputs.items()
                                 if types.is_tensor(v.sym_type)}
    if not hasattr(prog, "_var_kinds"):
        prog._var_kinds = {}  # id(Var) -> _kind_of(Var), for this program's Vars (alive as long as it is)
    retype = False
    for name, var in fn.inputs.items():
        if types.is_state(var.sym_type):
            if states is None or name not in states:
                raise KeyError(f"state {name!r} needs an initial value in states=")
            wrapped = var.sym_type.wrapped_type()
            states[name] = np.asarray(states[name]).astype(types.nptype_from_builtin(wrapped.get_primitive()))
            if wrapped.get_primitive() == types.fp16:
                states[name] = states[name].astype(np.float32)
            continue
        if name not in feeds:
            raise KeyError(f"missing input {name!r}; the program's inputs are {list(fn.inputs)}")
        arr = np.asarray(feeds[name])
        declared = prog._declared_shapes.get(name)
        if declared is not None and (len(declared) != arr.ndim or any(
                isinstance(d, (int, np.integer)) and d != a for d, a in zip(declared, arr.shape))):
            raise ValueError(f"input {name!r}: shape {arr.shape} does not fit the declared {declared}")
        if types.is_tensor(var.sym_type) and tuple(var.shape) != arr.shape:
            # dynamic (RangeDim / enumerated) input, or a previous call specialised it to another shape
            var._sym_type = types.tensor(var.dtype, arr.shape)
            retype = True
        _bind(var, _work(arr, var, prog._var_kinds))
    run = _Run(stats, prefer_builtin, retype, states, prog._var_kinds)
    if retype:
        with fn:  # some ops' type inference (re-run for a new input shape) asks for the current block
            run_block(fn, run)
    else:  # (entering a block re-walks the whole program on exit: skipped when nothing is re-typed)
        run_block(fn, run)
    if states is not None:  # hand states back in their declared dtype (fp16)
        for name, var in fn.inputs.items():
            if types.is_state(var.sym_type):
                states[name] = np.asarray(states[name]).astype(
                    types.nptype_from_builtin(var.sym_type.wrapped_type().get_primitive()))
    out = {}
    for var in fn.outputs:
        v = var._sym_val.val
        out[var.name] = np.asarray(v).astype(_np_dtype(var))
    return out


CONTROL_FLOW = ("cond", "while_loop")
STATE_OPS = ("read_state", "coreml_update_state")


def unsupported_ops(prog) -> set[str]:
    """Op types in the program that have neither a value_inference of their own nor a NumPy version here."""
    from coremltools.converters.mil.mil.operation import Operation

    missing: set[str] = set()

    def walk(block):
        for op in block.operations:
            t = op.op_type
            own = type(op).value_inference is not Operation.value_inference
            if not (own or t in CUSTOM or t == "const" or t in CONTROL_FLOW or t in STATE_OPS):
                missing.add(t)
            for b in op.blocks:
                walk(b)

    walk(prog.functions["main"])
    return missing
