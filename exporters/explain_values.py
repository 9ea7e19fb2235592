"""Intermediate values, by name, of the reference and of an artifact, for exporters.explain.

    reference_values(program, inputs)          # every FX node's output of an ExportedProgram: {node name: array}
    onnx_values(path, names, feeds)            # ONNX Runtime, every value named like an FX node made a graph output
    coreml_values(package, feeds)              # the NumPy evaluator, every MIL var's value (MIL keeps FX names)

The names meet because both converters keep them: the dynamo ONNX exporter names each node's output value
after the FX node it translates (its node metadata `pkg.torch.onnx.fx_node` says which), and coremltools names
each MIL op's output after the FX node it converts.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.export.graph_signature import InputKind


def _array(value) -> np.ndarray | None:
    if isinstance(value, torch.Tensor) and not value.is_complex():
        return value.detach().cpu().numpy().copy()
    return None


def reference_values(program: torch.export.ExportedProgram, inputs: tuple) -> dict[str, np.ndarray]:
    """{FX node name: its output} of `program` run by torch.fx's Interpreter on the flat user inputs
    `inputs` (parameters, buffers and constants from the program itself). Each node's output is copied: a
    later in-place op cannot change what was recorded."""
    values: dict[str, np.ndarray] = {}
    users = iter(inputs)
    args = []
    for s in program.graph_signature.input_specs:
        if s.kind == InputKind.USER_INPUT:
            args.append(next(users))
        elif s.target in program.state_dict:
            args.append(program.state_dict[s.target])
        else:
            args.append(program.constants[s.target])

    class Recorder(torch.fx.Interpreter):
        def call_function(self, target, args, kwargs):
            if target in (torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default):
                target = torch.ops.aten.reshape.default  # a program with its clones dropped (coreml_graph.prepare)
            return super().call_function(target, args, kwargs)

        def run_node(self, n):
            out = super().run_node(n)
            value = _array(out)
            if value is not None:
                values[n.name] = value
            return out

    with torch.no_grad():
        Recorder(program.graph_module).run(*args)
    return values


def onnx_values(path, names, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{value name: value} from ONNX Runtime (CPU) for every value of the main graph named in `names`,
    each added as a graph output of an in-memory copy of the model (the artifact is not changed)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    produced = [o for n in model.graph.node for o in n.output if o]
    extra = [o for o in dict.fromkeys(produced) if o in names and o not in have]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in extra)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every value
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs()]
    inputs = {i.name: feeds[i.name] for i in session.get_inputs()}
    return {n: np.asarray(v) for n, v in zip(wanted, session.run(wanted, inputs)) if isinstance(v, np.ndarray)}


def coreml_values(package, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{MIL var name: value} of every op of the saved .mlpackage's main block, evaluated by the NumPy
    evaluator (exporters.coreml_numpy) on `feeds` (by input name, int64/bool cast to int32 as the runners
    do). Raises coreml_numpy.Unsupported for an op it cannot compute."""
    from exporters import coreml_numpy
    from runtimes.backends.coreml import interface, to_boundary

    spec, weights = coreml_numpy.read_spec(str(package))
    prog = coreml_numpy.load_mlpackage(str(package), (spec, weights))
    missing = coreml_numpy.unsupported_ops(prog)
    if missing:
        raise coreml_numpy.Unsupported(f"the NumPy evaluator cannot compute op(s) {', '.join(sorted(missing))}")
    inputs, _, state_names, carried = interface(spec.description)
    if state_names:
        raise coreml_numpy.Unsupported("a package with CoreML states: explain the explicit-state export instead")
    coreml_numpy.evaluate(prog, {n: to_boundary(n, feeds[n], carried.get(n)) for n in inputs})
    out: dict[str, np.ndarray] = {}
    for op in prog.functions["main"].operations:
        if op.op_type == "const":
            continue
        for var in op.outputs:
            box = getattr(var, "_sym_val", None)
            value = getattr(box, "val", None)
            if isinstance(value, (np.ndarray, np.generic)):
                out[var.name] = np.asarray(value)
    return out
