"""Target `onnx`: the capture through the dynamo ONNX exporter; also the road to TensorRT.

fp32: the exported graph. fp16: the same graph converted to fp16 inside, fp32 at its inputs and outputs.
int8: weights quantized to int8 by ONNX Runtime's dynamic quantization, a scale per output channel.
Each also as ONNX Runtime optimized it once here (`optimize_offline`), which its CPU provider then loads as it is.
Verified by running it in ONNX Runtime on the CPU.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from exporters.capture import Captured, torch_noise_ignored
from exporters.errors import ConversionError
from exporters.target import Built, Execution, execute, versions
from exporters.target import Settings as TargetSettings

NAME = "onnx"
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_OPSET = 18
STACK_TRACE = "pkg.torch.onnx.stack_trace"  # node metadata the dynamo exporter writes


@dataclass
class Settings(TargetSettings):
    opset: int = DEFAULT_OPSET   # ONNX opset of the exported graph


def is_available() -> tuple[bool, str]:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False, 'onnx and onnxscript are not installed: pip install "neat-deploy[onnx]"'
    from runtimes.backends import onnx as backend

    return backend.is_available()


def write_onnx(cap: Captured, path: Path, opset: int) -> None:
    """The fp32 graph with the spec's input and output names, weights inside the one file. Translated once
    per capture and opset: the targets that build from it (onnx, tensorrt) share the translation."""
    path.write_bytes(cap.shared(("onnx", opset), lambda: _translate(cap, path, opset)))


def _translate(cap: Captured, path: Path, opset: int) -> bytes:
    import logging

    import torch

    # the exporter warns once per missing optional library (torchvision ops): noise for a user
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    ins, outs = cap.spec.names
    check_names(ins, outs)
    try:
        # optimize=False: onnxscript's optimizer was 40% of the translation (30 s of the shipped NEAT's 79), its
        # pattern rewrites nearly all of it, for the same ONNX Runtime speed: the graph ONNX Runtime runs is the
        # one it optimizes itself (optimize_offline). Constants are still folded (fold_constants: 0.1 s), which
        # TensorRT's parser needs (a ReduceMean's axes must be constant). benchmarks/NOTES.md.
        # It prints its progress steps even when not verbose.
        with contextlib.redirect_stdout(io.StringIO()), torch_noise_ignored():
            program = torch.onnx.export(float_clamp_bounds(cap.program), (), dynamo=True, input_names=list(ins),
                                        output_names=list(outs), opset_version=opset, optimize=False, verbose=False)
        fold_constants(program.model)
        program.save(str(path), external_data=False)
    except Exception as exc:  # the exporter raises many kinds; all mean the graph did not translate
        raise ConversionError(f"the ONNX exporter could not translate {cap.spec.name}: {_why(cap, exc, opset)}") from exc
    return path.read_bytes()


def fold_constants(model) -> None:
    """Fold what is constant in the exporter's graph (an onnx_ir Model, in place) and drop what that leaves
    unused: shapes and axes computed from constants become initializers, as parsers like TensorRT's need."""
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(model)
    onnxscript.optimizer.remove_unused_nodes(model)


def check_names(ins, outs) -> None:
    """Refuse an output named like an input: an ONNX graph (and a TensorRT engine's bindings) names every
    value once, and the runners and the manifest go by the spec's names."""
    both = sorted(set(ins) & set(outs))
    if both:
        raise ConversionError(f"ONNX names every graph value once, but {both} name both an input and an output: "
                              "give the outputs other names (output_names=) in the spec")


def float_clamp_bounds(program):
    """The program with aten.clamp's bounds on a float tensor made floats where one is an int and the other a
    float (the same clamp: a float tensor compares in its own dtype); the exporter's type promotion turns the
    int bound into a tensor that its decomposition then rejects (torch 2.10+: `x.clamp(min=0.0, max=63)`).
    The program itself when no clamp mixes them, else a changed copy (the capture is shared)."""
    import copy

    import torch

    def mixed(node) -> bool:
        if node.op != "call_function" or node.target is not torch.ops.aten.clamp.default:
            return False
        x, bounds = node.args[0], [*node.args[1:3], *node.kwargs.values()]
        val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
        kinds = {type(b) for b in bounds if isinstance(b, (int, float)) and not isinstance(b, bool)}
        return val is not None and val.dtype.is_floating_point and kinds == {int, float}

    if not any(mixed(n) for n in program.graph.nodes):
        return program
    program = copy.deepcopy(program)
    for node in program.graph.nodes:
        if mixed(node):
            node.args = tuple(float(a) if isinstance(a, int) and not isinstance(a, bool) else a for a in node.args)
            node.kwargs = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                           for k, v in node.kwargs.items()}
    program.graph_module.recompile()
    return program


def _why(cap: Captured, exc: Exception, opset: int) -> str:
    """The op the exporter has no ONNX function for and where the module uses it, else its first line."""
    import re

    from exporters.capture import find_op, source

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    missing = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    failed = re.search(r"Error when translating node %(\w+) : .*?target=([\w.]+)", text)
    if not missing and not failed:
        return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    op = missing.group(1) if missing else failed.group(2)
    node = next((n for n in cap.program.graph.nodes if failed and n.name == failed.group(1)), None)
    node = node if node is not None else find_op(cap.program, op)
    where = f" (at {source(node)})" if node is not None and source(node) else ""
    cause = re.search(r"## Exception summary\s*<class '[\w.]*?(\w+)'>: ([^\n]*)", text)
    why = f": {cause.group(1)}: {cause.group(2)[:200]}" if cause and not missing else ""
    return (f"opset {opset} has no translation for {op}{where}{why}. Rewrite that part of the "
            "module with other ops, or export another target (exported, cpu)")


def scoped_nodes(model, fp32_scopes: tuple[str, ...]) -> list[str]:
    """Names of the nodes whose torch stack trace contains one of `fp32_scopes` (they stay fp32)."""
    keep = [n.name for n in model.graph.node
            if any(f in {p.key: p.value for p in n.metadata_props}.get(STACK_TRACE, "") for f in fp32_scopes)]
    if fp32_scopes and not keep:
        raise ConversionError(f"no node matches the fp32 scopes {fp32_scopes}: the model's source changed")
    return keep


def to_fp16(src: Path, dst: Path, fp32_scopes: tuple[str, ...] = ()) -> None:
    """fp16 inside, fp32 at the inputs and outputs, with ONNX Runtime's own converter (onnxconverter-common's
    output does not load). Nodes whose torch stack trace contains one of `fp32_scopes` stay fp32."""
    import onnx
    import onnx_ir as ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    keep = scoped_nodes(model, fp32_scopes)
    fp16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    if keep:
        _repair_blocked_casts(fp16, model)
    graph = ir.from_proto(fp16)
    graph.graph.sort()  # the converter leaves nodes out of order
    ir.save(graph, str(dst))


def _repair_blocked_casts(fp16, fp32) -> None:
    """Two defects of the converter's node_block_list, mended in place: a tensor feeding several fp32 nodes
    gets one identical Cast per consumer (same output name: an invalid graph), and fp32 values between fp32
    nodes still pass through fp16 (a Cast to fp16 then back to fp32), which defeats keeping them fp32."""
    import onnx

    seen, nodes = set(), []
    for n in fp16.graph.node:
        if n.op_type == "Cast" and n.output[0] in seen:
            continue
        seen.update(n.output)
        nodes.append(n)
    original = {v.name: v.type.tensor_type.elem_type for v in (
        *onnx.shape_inference.infer_shapes(fp32).graph.value_info, *fp32.graph.input, *fp32.graph.output)}
    inputs = {i.name for i in fp16.graph.input}

    def was_fp32(name: str) -> bool:
        base = name[: -len("_cast_to_fp16")] if name.endswith("_cast_to_fp16") else name
        if name.startswith("graph_output_cast_") and name.endswith("_cast_to_fp16"):
            return True
        return original.get(base) == onnx.TensorProto.FLOAT and (name.endswith("_cast_to_fp16") or name in inputs)

    def cast_to(n) -> int:
        return next(a.i for a in n.attribute if a.name == "to")

    producer = {o: n for n in nodes for o in n.output}
    for n in nodes:  # Cast(fp32) of a Cast(fp16) of an fp32 value: read the fp32 value directly
        p = producer.get(n.input[0]) if n.op_type == "Cast" else None
        if (p is not None and p.op_type == "Cast" and cast_to(n) == onnx.TensorProto.FLOAT
                and cast_to(p) == onnx.TensorProto.FLOAT16 and was_fp32(p.input[0])):
            n.input[0] = p.input[0]
    outputs = {o.name for o in fp16.graph.output}
    while True:  # drop what nobody reads any more
        used = {x for n in nodes for x in n.input} | outputs
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del fp16.graph.node[:]
    fp16.graph.node.extend(nodes)


def to_int8(src: Path, dst: Path, fp32_scopes: tuple[str, ...] = ()) -> None:
    """int8 weights, activations quantized on the fly (ONNX Runtime only: TensorRT rejects these ops).
    Nodes whose torch stack trace contains one of `fp32_scopes` are not quantized. Weights get a scale per
    output channel: with one per tensor, the shipped NEAT's attention scores erred enough through the softmax
    to fail verification (logits cosine 0.894; 0.987 per channel, argmax 95% -> 96%)."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = scoped_nodes(onnx.load(str(src)), fp32_scopes)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises pre-processing on the root logger: not actionable here
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, nodes_to_exclude=keep, per_channel=True)
    finally:
        root.setLevel(level)


def export(cap: Captured, out: Path, settings: Settings) -> Built:
    from runtimes.backends.onnx import FILE

    path = out / FILE
    if settings.precision == "fp32":
        write_onnx(cap, path, settings.opset)
    else:
        tmp = out / "fp32.onnx.tmp"
        write_onnx(cap, tmp, settings.opset)
        if settings.precision == "fp16":
            to_fp16(tmp, path, cap.spec.fp32_scopes)
        else:
            to_int8(tmp, path, cap.spec.fp32_scopes)
        os.unlink(tmp)
    optimized = optimize_offline(out)
    return Built(toolchain=versions("torch", "onnx", "onnxscript", "onnxruntime"),
                 requirements={"opset": settings.opset, "ort_optimized": optimized},
                 settings={"opset": settings.opset})


def optimize_offline(out: Path) -> str:
    """`out`/OPTIMIZED: FILE after ONNX Runtime's graph optimizations, done once here instead of in every
    session that loads it; the ONNX Runtime version that made it (the backend loads it only with that one).
    EXTENDED, not ALL: ALL may write layouts for this very CPU, and the file travels with the bundle
    (benchmarks/NOTES.md, issue 27: the same speed here, and opening the NEAT bundle's five files 2.8x faster)."""
    import onnxruntime as ort

    from runtimes.backends.onnx import FILE, OPTIMIZED

    options = ort.SessionOptions()
    options.log_severity_level = 3  # its notes on nodes it leaves unfolded are not the user's to act on
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out / OPTIMIZED)
    try:
        ort.InferenceSession(str(out / FILE), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own kinds: all mean it could not load the graph
        raise ConversionError(f"ONNX Runtime could not load the exported graph: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}. Export another target "
                              "(exported, cpu), or report the graph") from exc
    return ort.__version__


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    from runtimes.backends.onnx import providers
    from runtimes.profile import detect

    provider = providers(detect())[0].replace("ExecutionProvider", "")
    return execute(NAME, artifact_dir, requirements, f"executed: ONNX Runtime, {provider} provider")
