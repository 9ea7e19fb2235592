"""The exported program as coremltools can convert it: the graph passes of the CoreML target.

    program = lower_lacking(program)   # ops coremltools lacks -> torch's own decomposition, where it has one
    program = prepare(program)         # view-only ops dropped, bool bitwise ops as logical ones, torch.cond
                                       # inlined, *_like ops' dtype made explicit, identity outputs
    lacking(program)                   # what is still unconvertible: {op: where in the module's source}

Each returns the program itself when it has nothing to change, otherwise a changed copy: the capture's
program is shared with the other targets and stays as it is.
"""
from __future__ import annotations

import copy

import torch
from torch.export.graph_signature import OutputKind, TensorArgument

from exporters.capture import source, torch_noise_ignored

# aten ops that only make a view or a copy: in the exported (functional) program they are their input
VIEW_ONLY = ("alias", "alias_copy", "lift_fresh", "lift_fresh_copy", "detach", "detach_copy", "clone",
             "contiguous")
# on bool tensors these are the logical ops (coremltools converts bitwise_and/not on bools, not or/xor: `a | b`)
BOOL_BITWISE = {"bitwise_or": torch.ops.aten.logical_or.default, "bitwise_xor": torch.ops.aten.logical_xor.default,
                "__or__": torch.ops.aten.logical_or.default, "__xor__": torch.ops.aten.logical_xor.default}
# ops whose `dtype=` keyword coremltools' torch.export frontend ignores (the result gets the input's dtype):
# nn.MultiheadAttention turns a bool attn_mask into `zeros_like(mask, dtype=float).masked_fill(mask, -inf)`,
# which then stayed bool and was read by scaled_dot_product_attention as "attend where True": inverted
LIKE_DTYPE = ("zeros_like", "full_like", "empty_like")
# coremltools converts aten.reciprocal to MIL `inverse`, whose default epsilon makes it 1 / (x + 1e-4): a
# relative error of 1e-4 / x, which failed fp32 verification (a stateful GPT's RMS-normalised memory, issue 31)


def _registry():
    """(coremltools' torch op registry, its op-name normaliser), or None where they cannot be read."""
    try:
        from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
        from coremltools.converters.mil.frontend.torch.utils import sanitize_op_kind
    except ImportError:
        return None
    # its dict, not the registry's `in` (deprecated in coremltools 7.2: a DeprecationWarning per node)
    return _TORCH_OPS_REGISTRY.name_to_func_mapping, sanitize_op_kind


def _lacking_nodes(program):
    """The nodes coremltools' torch frontend has no conversion for: aten ops missing from its registry,
    and higher-order ops (torch.cond, while_loop...) that it does not handle."""
    reg = _registry()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        if isinstance(node.target, torch._ops.HigherOrderOperator):
            yield node
        elif isinstance(node.target, torch._ops.OpOverload) and reg is not None:
            registry, sanitize = reg
            if sanitize(node.target.name()) not in registry:
                yield node


def lacking(program) -> dict[str, str]:
    """{op: where in the module's source} for the ops coremltools cannot convert (aten.* or
    higher_order.*). Without coremltools' registry only higher-order ops are found; ct.convert then
    names the rest."""
    out: dict[str, str] = {}
    for node in _lacking_nodes(program):
        name = (f"higher_order.{node.target.name()}" if isinstance(node.target, torch._ops.HigherOrderOperator)
                else str(node.target))
        out.setdefault(name, source(node))
    return out


def lower_lacking(program, rounds: int = 4):
    """Decompose the aten ops coremltools lacks (aten.gru_cell...) with torch.export's own default
    decompositions, where it has one, again for what those decompose into (aten.unsafe_split...); the
    others are left for `lacking` to name. View-only ops are left for `prepare` (aten.alias would become
    prims.view_of)."""
    defaults = None
    for _ in range(rounds):
        ops = {n.target for n in _lacking_nodes(program) if isinstance(n.target, torch._ops.OpOverload)
               and n.target.overloadpacket.__name__ not in VIEW_ONLY}
        defaults = defaults if defaults is not None or not ops else torch.export.default_decompositions()
        table = {op: defaults[op] for op in ops if op in defaults}
        if not table:
            break
        with torch_noise_ignored():
            program = program.run_decompositions(table)
    return program


def prepare(program):
    """View-only ops (aten.alias from slicing a buffer to its full size, detach, clone...) replaced by their
    input; bitwise or/xor of two bool tensors as logical or/xor; torch.cond with a tensor predicate computed
    as both branches and a select (torch.where), as the branches are pure functions; and every user output
    that is an input, a buffer or another output's tensor given its own identity op (else coremltools
    renames one var twice); zeros_like / full_like / empty_like with a `dtype=` other than their input's
    given an input cast to that dtype (coremltools ignores the keyword); aten.reciprocal(x) as
    div(ones_like(x), x), which converts to an exact real_div (see RECIPROCAL)."""
    gm = copy.deepcopy(program.graph_module)  # the graph only: weights live in program.state_dict
    graph = gm.graph
    changed = _drop_view_only(graph) | _bool_bitwise(graph) | _like_dtype(graph) | _exact_reciprocal(graph) | _inline_conds(gm)
    out_node = graph.output_node()
    outs, seen = list(out_node.args[0]), set()
    for i, s in enumerate(program.graph_signature.output_specs):
        node = outs[i]
        if s.kind != OutputKind.USER_OUTPUT or not isinstance(node, torch.fx.Node):
            continue
        if node.op == "placeholder" or node in seen:
            with graph.inserting_before(out_node):  # type_as(x, x) converts to a MIL identity op
                outs[i] = graph.call_function(torch.ops.aten.type_as.default, (node, node))
                outs[i].meta = dict(node.meta)
            changed = True
        seen.add(outs[i])
    if not changed:
        return program
    out_node.args = (tuple(outs),)
    graph.eliminate_dead_code()
    gm.recompile()
    signature = copy.deepcopy(program.graph_signature)
    for s, node in zip(signature.output_specs, outs):
        if isinstance(s.arg, TensorArgument) and isinstance(node, torch.fx.Node):
            s.arg = TensorArgument(name=node.name)
    return torch.export.ExportedProgram(
        root=gm, graph=graph, graph_signature=signature, state_dict=program.state_dict,
        range_constraints=program.range_constraints, module_call_graph=program.module_call_graph,
        example_inputs=program.example_inputs, constants=program.constants, verifiers=[program.verifier])


def _drop_view_only(graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
                and node.target.overloadpacket.__name__ in VIEW_ONLY and isinstance(node.args[0], torch.fx.Node)):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            changed = True
    return changed


def _bool_bitwise(graph) -> bool:
    """aten.bitwise_or / bitwise_xor (or __or__ / __xor__) of two bool tensors -> aten.logical_or / logical_xor
    (the same values)."""
    def is_bool(a) -> bool:
        val = a.meta.get("val") if isinstance(a, torch.fx.Node) else None
        return isinstance(val, torch.Tensor) and val.dtype == torch.bool

    changed = False
    for node in list(graph.nodes):
        if (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
                and node.target.overloadpacket.__name__ in BOOL_BITWISE and node.target._overloadname == "Tensor"
                and len(node.args) == 2 and all(is_bool(a) for a in node.args)):
            node.target = BOOL_BITWISE[node.target.overloadpacket.__name__]
            changed = True
    return changed


def _like_dtype(graph) -> bool:
    """zeros_like(x, dtype=d) (and full_like, empty_like) with x not of dtype d -> zeros_like(x.to(d)): the
    same values, and coremltools converts `_to_copy`'s dtype."""
    changed = False
    for node in list(graph.nodes):
        if (node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload)
                or node.target.overloadpacket.__name__ not in LIKE_DTYPE or not isinstance(node.args[0], torch.fx.Node)):
            continue
        val, dtype = node.args[0].meta.get("val"), node.kwargs.get("dtype")
        if dtype is None or not isinstance(val, torch.Tensor) or val.dtype == dtype:
            continue
        with graph.inserting_before(node):
            cast = graph.call_function(torch.ops.aten._to_copy.default, (node.args[0],), {"dtype": dtype})
        cast.meta = {**node.args[0].meta, "val": val.to(dtype)}
        node.args = (cast, *node.args[1:])
        node.kwargs = {k: v for k, v in node.kwargs.items() if k != "dtype"}
        changed = True
    return changed


def _exact_reciprocal(graph) -> bool:
    """aten.reciprocal(x) of a float x -> aten.div(full_like(x, 1), x): the same values, without the epsilon
    of MIL's `inverse` (the node keeps its name, so explain still lines it up with its MIL var)."""
    changed = False
    for node in list(graph.nodes):
        val = node.args[0].meta.get("val") if node.args and isinstance(node.args[0], torch.fx.Node) else None
        if (node.op != "call_function" or node.target is not torch.ops.aten.reciprocal.default
                or not isinstance(val, torch.Tensor) or not val.dtype.is_floating_point):
            continue
        with graph.inserting_before(node):
            ones = graph.call_function(torch.ops.aten.full_like.default, (node.args[0], 1.0))
        ones.meta = {**node.args[0].meta, "val": torch.ones_like(val)}
        node.target, node.args = torch.ops.aten.div.Tensor, (ones, node.args[0])
        changed = True
    return changed


def _inline_conds(gm) -> bool:
    """torch.cond(pred, true_fn, false_fn, operands) -> both branches inlined, each output a torch.where on
    pred. Only for a tensor predicate and branches without higher-order ops of their own."""
    graph, changed = gm.graph, False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.higher_order.cond:
            continue
        pred, true_attr, false_attr, operands = node.args[:4]
        branches = [getattr(gm, a.target) for a in (true_attr, false_attr)]
        if not isinstance(pred.meta.get("val"), torch.Tensor) or any(
                n.op == "get_attr" or isinstance(n.target, torch._ops.HigherOrderOperator)
                for b in branches for n in b.graph.nodes):
            continue
        with graph.inserting_before(node):
            values = []
            for branch in branches:
                places = [n for n in branch.graph.nodes if n.op == "placeholder"]
                out = graph.graph_copy(branch.graph, dict(zip(places, operands)))
                values.append(list(out) if isinstance(out, (tuple, list)) else [out])
            picked = [graph.call_function(torch.ops.aten.where.self, (pred, a, b)) for a, b in zip(*values)]
        for p, a in zip(picked, values[0]):
            p.meta = dict(a.meta)
        for user in list(node.users):  # getitem(cond, i)
            user.replace_all_uses_with(picked[user.args[1]])
            graph.erase_node(user)
        graph.erase_node(node)
        for attr in (true_attr, false_attr):
            if not attr.users:
                graph.erase_node(attr)
                delattr(gm, attr.target)
        changed = True
    return changed
