"""The baseline NEAT is measured against: a plain causal byte transformer of about the same parameter
count, trained on the same streams with the same budget (`neat train --arch plain`).

Same interface as NeatModel: forward(tokens, *state) -> (logits, *new_state), with one state tensor, the
last `context` tokens of the stream (PAD before the stream starts), which every layer attends to as well
as to the chunk itself (causal, RoPE). No patching, no memory, no adaptation, no modality mask.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
from torch import nn

from neat.config import PAD_ID, NeatConfig
from neat.layers import Block, RMSNorm, causal_window_bias


@dataclass(frozen=True)
class PlainConfig:
    name: str = "plain"
    arch: str = "plain"
    chunk_len: int = 128   # T
    context: int = 64      # carried tokens each chunk also attends to
    dim: int = 184        # 1.73 M parameters, NEAT tiny has 1.77 M
    layers: int = 4
    heads: int = 4
    vocab_size: int = NeatConfig().vocab_size

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PlainConfig":
        return cls(**json.loads(text))


# "plain": the same parameter count as NEAT tiny (2.8x its forward FLOPs per byte: 746 against 267 MFLOP per
# chunk); "plain_equal_flops": the same depth and context, narrowed to NEAT tiny's FLOPs per byte (268 MFLOP
# per chunk, +0.4%, neat.flops), 0.58 M parameters
PLAIN_PRESETS: dict[str, PlainConfig] = {
    "plain": PlainConfig(),
    "plain_equal_flops": PlainConfig(name="plain_equal_flops", dim=104),
}


def plain_preset(name: str) -> PlainConfig:
    try:
        return PLAIN_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown plain baseline {name!r}; choose one of {sorted(PLAIN_PRESETS)}") from None


class PlainModel(nn.Module):
    def __init__(self, cfg: PlainConfig):
        super().__init__()
        self.cfg = cfg
        C, T = cfg.context, cfg.chunk_len
        self.tok = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, rope_len=C + T) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.register_buffer("bias", causal_window_bias(C + T, C + T), persistent=False)  # causal

    state_names = ("context",)  # its one state tensor, named as NEAT's

    def init_state(self, batch: int) -> tuple[torch.Tensor]:
        return (torch.full((batch, self.cfg.context), PAD_ID, dtype=torch.int32, device=self.head.weight.device),)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor):
        # tokens (B, T) int32; context (B, C) int32 -> logits (B, T, V), new context (B, C)
        T = tokens.shape[1]
        ext = torch.cat([context, tokens], dim=1)  # (B, C + T)
        x = self.tok(ext)
        for block in self.blocks:
            x = block(x, self.bias)
        return self.head(self.norm(x[:, -T:])), ext[:, -self.cfg.context:]

    def forward_detailed(self, tokens, state, alpha=None) -> dict:
        logits, context = self(tokens, *state)
        return {"logits": logits, "state": (context,)}
