"""How `describe` takes what a user passes: options checked by name, and example inputs as torch.export takes
them (positional and keyword, nested in tuples, lists and dicts, with constant non-tensor values) flattened
into named tensor inputs behind a flat-signature wrapper module.

    forward(x, pair=(a, b), d={"key": c}, mode="fast")  ->  inputs x, pair_0, pair_1, d_key; "fast" baked in
"""
from __future__ import annotations

import difflib
import inspect
import re
from typing import Mapping

import torch
from torch import nn
from torch.utils import _pytree as pytree

from exporters.errors import SpecError

# ExportSpec fields that describe passes through as they are (**extra)
PASSED_THROUGH = ("config", "info", "reference_file", "reference_loader", "fp32_scopes", "methods", "decode")
CONSTANT_TYPES = (str, int, float, bool)


def check_options(given: Mapping, known) -> None:
    """Refuse options describe/export do not have, naming the closest valid one and all of them."""
    valid = sorted({*known, *PASSED_THROUGH})
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]}=? " if close else ""
            raise SpecError(f"unknown option {key}=: {hint}the options are {', '.join(valid)}")


class Nested(nn.Module):
    """forward(*tensors): the user's module called with its nested positional and keyword arguments rebuilt
    from the flat tensors, the constant (non-tensor) leaves baked in."""

    def __init__(self, inner: nn.Module, treedef, constants: list, tensor_at: list[int]):
        super().__init__()
        self.inner, self.treedef, self.constants, self.tensor_at = inner, treedef, constants, tensor_at

    def forward(self, *tensors):
        leaves = list(self.constants)
        for pos, t in zip(self.tensor_at, tensors):
            leaves[pos] = t
        args, kwargs = pytree.tree_unflatten(leaves, self.treedef)
        return self.inner(*args, **kwargs)


def as_args(example_inputs) -> tuple:
    """example_inputs as the positional arguments tuple (a lone tensor is one argument)."""
    if isinstance(example_inputs, Mapping):
        keys = ", ".join(map(repr, example_inputs))
        raise SpecError(f"example_inputs is a dict (keys {keys}): pass keyword inputs as example_kwargs={{...}}, "
                        "or the tensors as a tuple in forward's order")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise SpecError(f"example_inputs is a {type(example_inputs).__name__}: pass a tensor or a tuple of "
                        "forward's positional arguments")
    return tuple(example_inputs)


def flatten(module: nn.Module, args: tuple, kwargs: Mapping | None):
    """(module to export, flat example tensors, their names, constants baked in {name: value}). The module is
    `module` itself when every argument is a plain tensor, else a `Nested` wrapper taking the flat tensors."""
    kwargs = dict(kwargs or {})
    params = positional_names(module, len(args))
    leaves, treedef = pytree.tree_flatten_with_path((args, kwargs))
    tensors, names, constants, tensor_at, values = [], [], {}, [], []
    for pos, (path, leaf) in enumerate(leaves):
        top, keys = path[1], path[2:]
        base = params[top.idx] if path[0].idx == 0 else str(top.key)
        name = re.sub(r"\W", "_", "_".join([base, *(str(_key(k)) for k in keys)]))
        if isinstance(leaf, torch.Tensor):
            tensors.append(leaf)
            names.append(name)
            tensor_at.append(pos)
            values.append(None)
        elif isinstance(leaf, CONSTANT_TYPES):
            constants[name] = leaf
            values.append(leaf)
        else:
            raise SpecError(f"input {name!r} is a {type(leaf).__name__}, not a tensor: every input of an exported "
                            "model is a tensor (or a str/int/float/bool constant, baked in); keep other values "
                            "as module attributes or pass torch.tensor(value)")
    plain = not kwargs and len(tensors) == len(args) and all(isinstance(a, torch.Tensor) for a in args)
    wrapped = module if plain else Nested(module, treedef, values, tensor_at)
    return wrapped, tensors, names, constants


def _key(k):
    if isinstance(k, pytree.SequenceKey):
        return k.idx
    if isinstance(k, pytree.MappingKey):
        return k.key
    return getattr(k, "name", k)


def positional_names(module: nn.Module, n: int) -> list[str]:
    """Names of forward's positional parameters, then input_<i> for what *args collects."""
    names = []
    for p in inspect.signature(module.forward).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and len(names) < n:
            names.append(p.name)
    return names + [f"input_{i}" for i in range(len(names), n)]
