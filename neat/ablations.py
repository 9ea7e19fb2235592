"""The ablations `neat eval` scores: each NEAT mechanism taken away in turn, on the trained model itself.

Each is a context manager around the model (what it changes is restored on exit), an optional expert mix
`alpha`, and an optional per-chunk state reset: memory output off, memory reset every chunk, every state
reset every chunk, Transformer² Z = 0 (the base weights) and each expert forced. A condition that takes away a
mechanism the model was configured without (cfg.memory, cfg.experts) is not scored: `skipped` says which and why.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from neat.model import MEMORY_STATE, NeatModel


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
    idx = [model.state_names.index(n) for n in names]

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
        "reset_every_chunk": (none, None, state_reset(model, [n for n in model.state_names if n != "modality"])),
    }
    if model.cfg.memory:
        out["memory_off"] = (lambda: memory_output_off(model), None, None)
        out["memory_reset_every_chunk"] = (none, None, state_reset(model, MEMORY_STATE))
    if model.cfg.svf_factored:
        out["z_zero"] = (lambda: svf_z_zero(model), None, None)
        for k, name in enumerate(model.cfg.experts):
            out[f"expert_{name}"] = (none, F.one_hot(torch.tensor([k]), model.cfg.n_experts).float(), None)
    return out


def skipped(model: NeatModel) -> dict[str, str]:
    """The conditions `conditions` leaves out for this model's config, each with the reason."""
    out = {}
    if not model.cfg.memory:
        out.update(dict.fromkeys(("memory_off", "memory_reset_every_chunk"), "no memory"))
    if not model.cfg.experts:
        out["z_zero"] = out["expert_*"] = "no experts"
    return out
