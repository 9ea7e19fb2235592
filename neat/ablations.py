"""The ablations `neat eval` scores: each NEAT mechanism taken away in turn, on the trained model itself.

Each is a context manager around the model (what it changes is restored on exit), an optional expert mix
`alpha`, and an optional per-chunk state reset: memory output off, memory reset every chunk, every state
reset every chunk, Transformer² Z = 0 (the base weights) and each expert forced.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from neat.model import STATE_NAMES, NeatModel

MEMORY_STATE = ("mem_w1", "mem_w2", "mem_s1", "mem_s2")


@contextlib.contextmanager
def memory_output_off(model: NeatModel):
    """The Titans memory still learns, but its retrieval y = M(q) is replaced by zeros."""
    hooks = [layer.memory.register_forward_hook(lambda mod, args, out: (torch.zeros_like(out[0]), *out[1:]))
             for layer in model.layers]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


@contextlib.contextmanager
def svf_z_zero(model: NeatModel):
    """Transformer² off: every expert vector Z = 0, i.e. z' = 1, the base weights."""
    saved = [(lin, lin.Z.detach().clone()) for layer in model.layers for lin in (layer.mlp.up, layer.mlp.down)]
    try:
        for lin, _ in saved:
            lin.Z.data.zero_()
        yield
    finally:
        for lin, z in saved:
            lin.Z.data.copy_(z)


def state_reset(model: NeatModel, names: Sequence[str]) -> Callable:
    """A per-chunk reset of the named state tensors to their initial value (all of them: a stateless model)."""
    idx = [STATE_NAMES.index(n) for n in names]

    def reset(state):
        init = model.init_state(state[0].shape[0])
        return tuple(init[i] if i in idx else s for i, s in enumerate(state))

    return reset


def conditions(model: NeatModel) -> dict[str, tuple]:
    """name -> (context manager factory, alpha, reset) for every configuration `neat eval` scores."""
    none = contextlib.nullcontext
    out = {
        "carried": (none, None, None),
        # every state but `modality`, a parse of the token stream (inside an image span or not): reset mid-image
        # it makes the logit mask rule out the true codes, an artefact rather than lost context
        "reset_every_chunk": (none, None, state_reset(model, [n for n in STATE_NAMES if n != "modality"])),
        "memory_off": (lambda: memory_output_off(model), None, None),
        "memory_reset_every_chunk": (none, None, state_reset(model, MEMORY_STATE)),
    }
    if model.cfg.svf_factored:
        out["z_zero"] = (lambda: svf_z_zero(model), None, None)
        for k, name in enumerate(model.cfg.experts):
            out[f"expert_{name}"] = (none, F.one_hot(torch.tensor([k]), model.cfg.n_experts).float(), None)
    return out
