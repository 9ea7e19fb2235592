"""Target `mlx`: the capture lowered to MLX op by op, written as an `.mlxfn` program (the Apple-silicon path).

There is no PyTorch-to-MLX converter: the core ATen graph (after run_decompositions()) is walked node by node,
each op through one entry of `exporters.mlx_ops.OPS`, weights and constants as MLX arrays captured by the
program. `mx.exporter` traces it once per batch size in the spec's range into one file (MLX's shapeless
export bakes sizes computed from the batch into the graph, so it is not used); the runtime picks the trace
matching the inputs' shapes. fp16: float weights and compute in fp16, fp32 at the inputs and outputs; nodes in
the spec's fp32 scopes stay fp32, weights included, and accumulating ops (mlx_ops.ACCUMULATE) add in fp32, and
a softmax's logits stay fp32 (_softmax_logits). Weights are evaluated before tracing, so the file stores each
once per dtype it is read in (fp16, fp32 for scoped nodes) and shares them across the batch traces; an
unevaluated astype would store the fp32 array and a cast. int8:
each Linear weight through mx.quantize (8 bits, groups of 64 or 32), run by mx.quantized_matmul; compute fp32. Verified by running the file with `mx.import_function` (CPU on Linux).
"""
from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass
from pathlib import Path

from exporters.capture import Captured, source
from exporters.errors import ConversionError
from exporters.target import Built, Execution, execute, versions
from exporters.target import Settings as TargetSettings

NAME = "mlx"
PRECISIONS = ("fp32", "fp16", "int8")
QUANT_GROUPS = (64, 32)  # mx.quantize's group size: the first that divides a Linear's input width
MAX_TRACES = 64  # batch sizes traced into one file; a wider dynamic batch is refused (export a narrower one)
SOFTMAX = ("_softmax.default", "_log_softmax.default")
NOT_IN_ALL = "left out of `all` (minutes of build and verification on NEAT): `neat export mlx` builds it"


@dataclass
class Settings(TargetSettings):
    pass


def is_available() -> tuple[bool, str]:
    try:
        import mlx.core  # noqa: F401
    except ImportError:
        return False, 'mlx is not installed: pip install "neat-deploy[mlx]" (mlx[cpu] on Linux)'
    from runtimes.backends import mlx as backend

    return backend.is_available()


class _Lowering:
    """One walk of a captured graph with MLX arrays; `precision` maps float32 to the compute dtype."""

    def __init__(self, program, precision: str, fp32_scopes: tuple[str, ...]):
        import mlx.core as mx
        import torch

        from exporters.mlx_ops import DTYPES

        self.mx, self.torch, self.program = mx, torch, program
        self.dtypes = {**DTYPES, **({torch.float32: mx.float16} if precision == "fp16" else {})}
        self.half = precision == "fp16"
        self.scopes = fp32_scopes if self.half else ()
        sig, tensors = program.graph_signature, {**program.state_dict, **program.constants}
        fixed = {s.arg.name: tensors[s.target] for s in sig.input_specs
                 if s.kind.name in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR")}
        self.fixed = {name: self.array(t) for name, t in fixed.items()}
        # an fp32 scope reads its weights in fp32 too (as onnx/coreml keep a kept node's initializers)
        self.fixed32 = {name: self.array(t, compute=False) for name, t in fixed.items()} if self.scopes else {}
        self.quant = self.quantized(program, fixed) if precision == "int8" else {}
        self.user = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
        self.logits = _softmax_logits(program.graph) if self.half else set()
        self.outputs = [i for i, s in enumerate(sig.output_specs) if s.kind.name == "USER_OUTPUT"]

    def quantized(self, program, fixed: dict) -> dict:
        """{mm/addmm node: (w, scales, biases, group)}: each Linear weight (a 2-D parameter read transposed whose
        input width a group size divides) through mx.quantize to 8 bits; the others stay fp32."""
        out = {}
        for node in program.graph.nodes:
            op = getattr(node.target, "__name__", "")
            if op not in ("mm.default", "addmm.default"):
                continue
            rhs = node.args[-1]
            w = rhs.args[0] if getattr(rhs.target, "__name__", "") == "permute.default" else None
            if w is None or w.name not in fixed or fixed[w.name].ndim != 2 or list(rhs.args[1]) != [1, 0]:
                continue
            group = next((g for g in QUANT_GROUPS if fixed[w.name].shape[1] % g == 0), None)
            if group and fixed[w.name].is_floating_point():
                out[node.name] = (*self.mx.quantize(self.array(fixed[w.name]), group_size=group, bits=8), group)
        return out

    def qmatmul(self, node, args):
        """x @ W.T (+ bias) with W quantized: mx.quantized_matmul."""
        w, scales, biases, group = self.quant[node.name]
        x = args[1] if len(args) > 2 else args[0]
        y = self.mx.quantized_matmul(x, w, scales, biases, transpose=True, group_size=group, bits=8)
        if len(args) > 2:  # addmm(c, x, w.T, beta, alpha)
            c, beta, alpha = args[0], args[3], args[4]
            y = y * alpha + c * beta
        return y

    def array(self, t, compute: bool = True):
        """A torch tensor as an MLX array, in the compute dtype (compute=False: in its own dtype)."""
        from exporters.mlx_ops import DTYPES

        t = t.detach().cpu()
        a = self.mx.array(t.float().numpy() if t.dtype == self.torch.bfloat16 else t.numpy())
        a = a.astype((self.dtypes if compute else DTYPES)[t.dtype])
        self.mx.eval(a)  # a constant, not a cast of an fp32 array traced into the file
        return a

    def __call__(self, *inputs):
        env = dict(self.fixed)
        for name, x in zip(self.user, inputs):
            env[name] = x.astype(self.dtypes[self.torch.float32]) if x.dtype == self.mx.float32 else x
        outs = self.run(self.program.graph_module, env)
        node = next(n for n in self.program.graph.nodes if n.op == "output")
        return tuple(self.io(outs[i], node.args[0][i]) for i in self.outputs)

    def io(self, out, node):
        """An output in the dtype the module returns it in (fp32 outside an fp16 program)."""
        from exporters.mlx_ops import DTYPES

        out = out if isinstance(out, self.mx.array) else self.mx.array(out)
        val = node.meta.get("val") if hasattr(node, "meta") else None
        want = DTYPES.get(getattr(val, "dtype", None), out.dtype)
        return out if out.dtype == want else out.astype(want)

    def run(self, gm, env: dict, inputs=None) -> list:
        """Evaluate `gm`'s graph; placeholders from `env` by name, else in order from `inputs`."""
        feed = iter(inputs or ())
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                env[node.name] = env[node.name] if node.name in env else next(feed)
            elif node.op == "get_attr":
                env[node.name] = getattr(gm, node.target)
            elif node.op == "call_function":
                env[node.name] = self.call(node, env)
            elif node.op == "output":
                return [self.value(a, env) for a in node.args[0]]
        return []

    def value(self, a, env):
        import torch

        if isinstance(a, torch.fx.Node):
            return env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.value(x, env) for x in a)
        return a

    def call(self, node, env):
        from exporters.mlx_ops import ACCUMULATE, OPS, PYTHON, op_name

        mx, name = self.mx, op_name(node.target)
        try:
            if name == "cond":
                return self.cond(node, env)
            if node.target in PYTHON:
                return PYTHON[node.target](*self.value(node.args, env))
            if name not in OPS:
                raise ConversionError(f"MLX has no lowering for aten.{name}{_at(node)}: rewrite that part of the "
                                      "module with other ops, or export another target (onnx, cpu)")
            scoped = node.name in self.logits or (
                self.scopes and any(s in (node.meta.get("stack_trace") or "") for s in self.scopes))
            args = self.bind(node, ChainMap(self.fixed32, env) if scoped else env)
            if scoped or (self.half and name in ACCUMULATE):
                args = [a.astype(mx.float32) if isinstance(a, mx.array) and a.dtype == mx.float16 else a
                        for a in args]
            out = self.qmatmul(node, args) if node.name in self.quant else OPS[name](*args)
        except ConversionError:
            raise
        except Exception as exc:  # Unsupported, or MLX refusing this use of the op
            raise ConversionError(f"MLX cannot lower aten.{name}{_at(node)}: {type(exc).__name__}: "
                                  f"{(str(exc).splitlines() or [''])[0]}. Rewrite that part of the module, or "
                                  "export another target (onnx, cpu)") from exc
        return self.cast(out, node.meta.get("val"), scoped)

    def bind(self, node, env) -> list:
        """The op's arguments in schema order, keyword ones placed, defaults filled."""
        args = list(self.value(node.args, env))
        for arg in node.target._schema.arguments[len(args):]:
            if arg.name in node.kwargs:
                args.append(self.value(node.kwargs[arg.name], env))
            elif arg.has_default_value():
                args.append(arg.default_value)
            else:
                break
        return args

    def cast(self, out, val, scoped=False):
        """Every tensor result in the dtype torch recorded for it (mapped by the precision)."""
        if isinstance(out, (tuple, list)):
            vals = val if isinstance(val, (tuple, list)) else [None] * len(out)
            return tuple(self.cast(o, v, scoped) for o, v in zip(out, vals))
        if isinstance(out, self.mx.array) and isinstance(val, self.torch.Tensor):
            want = self.mx.float32 if scoped and val.dtype == self.torch.float32 else self.dtypes[val.dtype]
            return out if out.dtype == want else out.astype(want)
        return out

    def cond(self, node, env):
        """torch.cond: both branches evaluated, the result chosen elementwise (the branches agree in shape)."""
        pred, yes, no, operands = (self.value(a, env) for a in node.args)
        a, b = self.run(yes, {}, list(operands)), self.run(no, {}, list(operands))
        return tuple(self.mx.where(pred, x, y) for x, y in zip(a, b))


def _softmax_logits(graph) -> set[str]:
    """The adds and subtracts whose result a softmax reads: in an fp16 program they stay fp32. An additive
    mask (NEG = -1e4) is where fp16's spacing is 8, so a row masked whole (an empty patch slot) rounds its
    scores away: the softmax that fp32 keeps close to the unmasked one becomes nearly uniform."""
    from exporters.mlx_ops import op_name

    return {a.name for n in graph.nodes if n.op == "call_function" and op_name(n.target) in SOFTMAX
            for a in n.args[:1] if op_name(getattr(a, "target", None)) in ("add.Tensor", "sub.Tensor")}


def _at(node) -> str:
    where = source(node)
    return f" (at {where})" if where else ""


def export(cap: Captured, out: Path, settings: Settings) -> Built:
    import mlx.core as mx

    from runtimes.backends.mlx import FILE

    spec, (lo, hi) = cap.spec, cap.spec.batch
    if hi - lo + 1 > MAX_TRACES:
        raise ConversionError(f"the mlx target traces one program per batch size, and {spec.name}'s batch "
                              f"{lo}..{hi} has more than {MAX_TRACES}: export a narrower batch "
                              f"(batch=({lo}, {lo + MAX_TRACES - 1}))")
    lowering = _Lowering(cap.decomposed("core"), settings.precision, tuple(spec.fp32_scopes))
    path = out / FILE
    with mx.exporter(str(path), lowering) as exporter:
        for batch in range(lo, hi + 1):
            exporter(*[lowering.array(t, compute=False) for t in spec.example_inputs(batch)])
    return Built(toolchain=versions("torch", "mlx"), requirements={"mlx": mx.__version__, "batches": f"{lo}..{hi}"},
                 settings={})


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    import mlx.core as mx

    device = str(mx.default_device().type).split(".")[-1]  # cpu here, gpu on Apple silicon
    return execute(NAME, artifact_dir, requirements, f"executed: MLX, {device}")
