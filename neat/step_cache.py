"""The keys and values the decode step (neat.step) carries, so that a step projects one new row per attention
layer instead of re-projecting every cached input: the per-row selections it writes them with, the windowed
byte layer and the decoder's read over cached keys, and the caches of a step state entered from a chunk state.

Layout: per attention layer, keys and values in the attention's head layout (B, H, N, hd) (Attention.kv);
a windowed byte layer's keys are kept before RoPE (the window rolls, so RoPE is applied per step, at the
positions the chunk forward gives them); the other attentions have no RoPE.
"""
from __future__ import annotations

import torch

from neat.config import NEG


def onehot(i: torch.Tensor, n: int) -> torch.Tensor:
    """i (B, 1) float index -> (B, 1, n) float one-hot (all zeros where i is out of range)."""
    return (i[..., None] == torch.arange(n, device=i.device, dtype=i.dtype)).to(i.dtype)


def put_row(buf: torch.Tensor, row: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """buf (B, N, C) with row (B, 1, C) written where sel (B, 1, N) one-hot is 1 (exact: a select); or per head,
    buf (B, H, N, hd) with row (B, H, 1, hd)."""
    where = sel.transpose(1, 2)  # (B, N, 1)
    if buf.dim() == 4:
        where = where[:, None]  # (B, 1, N, 1)
    return torch.where(where > 0, row, buf)


def keep(flag: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """new where the per-row flag (B, 1) bool is set, else old (any shape with batch first)."""
    return torch.where(flag.view(-1, *[1] * (new.dim() - 1)), new, old)


def roll(buf: torch.Tensor, row: torch.Tensor, dim: int) -> torch.Tensor:
    """buf without its oldest entry along dim, row appended: a window moved on by one byte."""
    return torch.cat([buf.narrow(dim, 1, buf.shape[dim] - 1), row], dim=dim)


def window_step(block, x: torch.Tensor, window: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor):
    """One byte through a WindowBlock: x (B, 1, d); window (B, W, d) normed inputs of the last W bytes (what the
    chunk state carries); k (before RoPE), v (B, H, W, hd) their keys and values; bias (B, 1, 1, W)
    -> (B, 1, d), new window, k, v. The query sees the W - 1 latest carried bytes and itself."""
    h = block.norm1(x)
    kn, vn = block.attn.kv(h)  # (B, H, 1, hd)
    k, v = roll(k, kn, 2), roll(v, vn, 2)  # (B, H, W, hd)
    x = x + block.attn.attend(h, k, v, bias)
    return x + block.mlp(block.norm2(x)), roll(window, h, 1), k, v


def decoder_read(decoder, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pid: torch.Tensor) -> torch.Tensor:
    """LocalDecoder.read over cached keys: x (B, 1, d) plus its cross-attention to slots 0..pid (B, 1) of the
    read keys/values k, v (B, H, Pm, hd) (slot s: kv of norm_kv(gbuf slot s))."""
    slots = torch.arange(k.shape[2], device=x.device, dtype=pid.dtype)
    seen = (slots[None, None, :] <= pid[..., None]).float()  # (B, 1, Pm)
    return x + decoder.cross.attend(decoder.norm_q(x), k, v, ((1.0 - seen) * NEG)[:, None])


def read_kv(decoder, prev_patch: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's read keys/values at a chunk start: slot 0 from prev_patch (B, D), the others zero (as
    kv of the zero slots: no bias, and RMSNorm(0) = 0) -> k, v (B, H, slots, hd)."""
    k, v = decoder.cross.kv(decoder.norm_kv(prev_patch[:, None]))  # (B, H, 1, hd)
    pad = k.new_zeros(k.shape[0], k.shape[1], slots - 1, k.shape[3])
    return torch.cat([k, pad], 2), torch.cat([v, pad], 2)


def latent_kv(model, lat_window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent layers' keys/values at a chunk start: persistent tokens, the carried patches lat_window
    (B, L, R, D) (+ carry_pos), zeros for this chunk's slots -> k, v (B, L, H, Np + R + Pm, hd)."""
    B, Pm = lat_window.shape[0], model.cfg.max_patches
    ks, vs = [], []
    for i, layer in enumerate(model.layers):
        k, v = layer.attn.kv(torch.cat([layer.persistent.expand(B, -1, -1), lat_window[:, i] + layer.carry_pos], 1))
        pad = k.new_zeros(B, k.shape[1], Pm, k.shape[3])
        ks.append(torch.cat([k, pad], 2))
        vs.append(torch.cat([v, pad], 2))
    return torch.stack(ks, 1), torch.stack(vs, 1)
