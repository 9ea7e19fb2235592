"""NEAT's entry points besides the chunk forward: the decode step's methods (neat.step) as modules an
exporter can capture, and their roles in incremental decoding (runtimes.decode)."""
from __future__ import annotations

from torch import nn

# method name in a bundle -> DecodeStep method
METHODS = {"step_enter": "from_chunk_state", "step": "patch_step", "byte_step": "byte_step", "needs_patch": "gate",
           "step_commit": "commit"}
DECODE = {"enter": "step_enter", "step": "step", "light_step": "byte_step", "gate": "needs_patch", "commit": "step_commit"}


class Method(nn.Module):
    """forward(*args) = step.<name>(*args): one DecodeStep method as a module of its own (from_chunk_state
    takes the chunk state as one tuple)."""

    def __init__(self, step: nn.Module, name: str):
        super().__init__()
        self.step, self.name = step, name

    def forward(self, *args):
        fn = getattr(self.step, self.name)
        return fn(args) if self.name == "from_chunk_state" else fn(*args)  # commit takes the step state flat


def entry_point(model: nn.Module, name: str) -> nn.Module:
    """The module computing entry point `name` ("forward" or a key of METHODS) of a NEAT model."""
    from neat.errors import NeatError
    from neat.step import DecodeStep

    if name == "forward":
        return model
    if name not in METHODS:
        raise NeatError(f"NEAT has no entry point {name!r}; it has forward, {', '.join(METHODS)}")
    return Method(DecodeStep(model), METHODS[name]).eval()
