"""What running a module tells `describe`: its outputs flattened, which buffers and inputs it writes in place,
its output names, and which outputs carry the batch. Every run is on copies; buffers are restored after."""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from exporters.errors import SpecError
from exporters.spec import DTYPE_NAMES, DTYPES, at_batch


class Flat(nn.Module):
    """forward(*args) -> a flat tuple of tensors, whatever structure the wrapped module returns (a Python int,
    float or bool it returns is a 0-d tensor: int64, float32, bool). Outputs that
    are an input itself come back as a copy (an artifact output must be a value of its own), and inputs the
    module writes into (`mutated`, by position) are copied first: an artifact never changes its caller's
    arrays, and no target has to express input mutation (CoreML cannot)."""

    def __init__(self, inner: nn.Module, mutated: Sequence[int] = ()):
        super().__init__()
        self.inner, self.mutated = inner, frozenset(mutated)

    def forward(self, *args):
        args = tuple(a.clone() if i in self.mutated else a for i, a in enumerate(args))
        flat = torch.utils._pytree.tree_leaves(self.inner(*args))
        flat = [torch.tensor(x) if isinstance(x, (bool, int, float)) else x for x in flat]  # a Python number: 0-d
        return tuple(x.clone() if any(x is a for a in args) else x for x in flat)


class Lifted(nn.Module):
    """Buffers that forward updates in place, made explicit state: forward(*inputs, *buffers) runs the module
    on copies of the given buffer values and returns (*outputs, *new buffer values)."""

    def __init__(self, inner: nn.Module, names: Sequence[str]):
        super().__init__()
        self.inner, self.names = inner, tuple(names)

    def forward(self, *args):
        n = len(args) - len(self.names)
        values = {name: v.clone() for name, v in zip(self.names, args[n:])}
        out = torch.func.functional_call(self.inner, values, args[:n], strict=False, tie_weights=False)
        return (*torch.utils._pytree.tree_leaves(out), *values.values())


def run(module: nn.Module, inputs) -> list[torch.Tensor]:
    try:
        with torch.no_grad():
            out = module(*[x.clone() for x in inputs])
    except Exception as exc:
        raise SpecError(f"the module fails on its example inputs: {type(exc).__name__}: {exc}") from exc
    for i, y in enumerate(out):
        if not isinstance(y, torch.Tensor):
            raise SpecError(f"output {i} is a {type(y).__name__}: an exported model returns tensors only")
        if y.dtype not in DTYPE_NAMES:
            raise SpecError(f"output {i} has dtype {y.dtype}; supported: {', '.join(DTYPES)}: cast it in forward")
    return list(out)


def mutated_buffers(module: nn.Module, inputs) -> list[str]:
    """Names of buffers that forward writes in place (found by one run; the values are restored after)."""
    buffers = dict(module.named_buffers())
    saved = {n: b.detach().clone() for n, b in buffers.items()}
    versions = {n: b._version for n, b in buffers.items()}
    run(Flat(module), inputs)
    changed = [n for n, b in buffers.items() if b._version != versions[n]]
    with torch.no_grad():
        for n in changed:
            buffers[n].copy_(saved[n])
    return changed


def mutated_inputs(module: nn.Module, inputs) -> list[int]:
    """Positions of the inputs that forward writes into (found by one run on copies)."""
    copies = [x.clone() for x in inputs]
    versions = [x._version for x in copies]
    with torch.no_grad():
        module(*copies)
    return [i for i, (x, v) in enumerate(zip(copies, versions)) if x._version != v]


def output_names(module, inputs, n_out: int, given, lifted) -> list[str]:
    if given is not None:
        if len(given) != n_out:
            raise SpecError(f"output_names has {len(given)} names; the module returns {n_out} output tensor(s)")
        return list(given)
    target = Lifted(module, lifted) if lifted else module
    with torch.no_grad():
        out = target(*[x.clone() for x in inputs])
    if isinstance(out, torch.Tensor):
        return ["output"]
    paths = [torch.utils._pytree.keystr(p) for p, _ in torch.utils._pytree.tree_flatten_with_path(out)[0]]
    names = [clean(p) or f"output_{i}" for i, p in enumerate(paths)][:n_out]
    return ["output"] if names == ["output_0"] else names


def clean(path: str) -> str:
    """A pytree key path ("[0]", "['logits']", "[1]['h']") as a tensor name: output_0, logits, output_1_h."""
    parts = re.findall(r"\[(?:'([^']*)'|(\d+))\]|\.(\w+)", path)
    words = [k or a or (f"output_{i}" if j == 0 else i) for j, (k, i, a) in enumerate(parts)]
    name = "_".join(str(w) for w in words)
    return re.sub(r"\W", "_", name)


def batched_outputs(wrapped, inputs, batched, outs, B: int, bounds) -> list[bool]:
    """Which outputs carry the batch: those whose dim 0 follows the inputs' batch (tried at another batch
    when the batch is dynamic; with a fixed batch, those whose dim 0 equals it)."""
    lo, hi = bounds
    other = next((b for b in (B + 1, B - 1) if lo <= b <= hi and b >= 1), None) if lo != hi else None
    if other is None:
        return [y.dim() > 0 and y.shape[0] == B and any(batched) for y in outs]
    again = run(wrapped, [at_batch(x, other) if b else x for x, b in zip(inputs, batched)])
    return [y.dim() > 0 and z.shape[0] == other and y.shape[0] == B for y, z in zip(outs, again)]
