"""Inference cost per byte of every model `neat eval` compares: forward FLOPs (2 x multiply-adds) per byte.

Counted with torch.utils.flop_counter.FlopCounterMode on one chunk of batch 1 from the initial state, so it
covers whatever the forward really computes (NEAT: entropy model, local encoder and decoder, latent layers,
memory update and retrieval, dispatch pass; the plain baseline: every layer over its carried context and the
chunk). FlopCounterMode counts matrix products and attention (the bulk of the cost), not element-wise ops.
The n-gram count model computes no multiply-adds: its cost is table lookups (`NGRAM_LOOKUPS_PER_BYTE`).
"""
from __future__ import annotations

import torch

NGRAM_LOOKUPS_PER_BYTE = "one count-table lookup per order and byte"


@torch.no_grad()
def forward_flops_per_chunk(model) -> int:
    """Forward FLOPs of one chunk (batch 1, the model's chunk_len tokens of text, initial state)."""
    from torch.utils.flop_counter import FlopCounterMode

    T = model.cfg.chunk_len
    tokens = (torch.arange(T, dtype=torch.int32) % 94 + 32)[None]  # printable ASCII: a text chunk
    state = model.init_state(1)
    counter = FlopCounterMode(display=False)
    with counter:
        model(tokens, *state)
    return int(counter.get_total_flops())


def flops_per_byte(model) -> float:
    """Forward FLOPs per byte: one chunk's FLOPs over its length."""
    return forward_flops_per_chunk(model) / model.cfg.chunk_len


def cost(model) -> dict:
    """A row's cost: forward FLOPs per byte and, where its checkpoint recorded them, training wall time and the
    optimizer steps that trained the model (NEAT: its base stage and expert stage; the frozen entropy model's
    own stage is in the wall time, not in the steps)."""
    out = {"flops_per_byte": flops_per_byte(model)}
    info = getattr(model, "train_info", {})
    if info.get("train_seconds") is not None:
        out["train_seconds"] = info["train_seconds"]
    steps = info.get("steps")
    if isinstance(steps, dict):
        out["train_steps"] = sum(int(n) for stage, n in steps.items() if stage != "entropy")
    return out
