"""Small building blocks shared by every part of the model: norm, attention, MLP, masks.

Everything here is written with plain matmuls, softmax and elementwise ops so that one
torch.export capture lowers to ONNX, TensorRT, CoreML and AOTInductor alike.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neat.config import NEG


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * w, written out (coremltools 9 fails on nn.RMSNorm).

    Computed as (x/s) * rsqrt(mean((x/s)^2) + eps/s^2) with s = max|x| over the row: the same function,
    but x^2 never overflows fp16 (the latent residual stream reaches |x| ~ 500, and 500^2 > 65504).
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.abs().amax(-1, keepdim=True).clamp(min=1e-3)  # (..., 1)
        y = x / s
        return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps / s / s) * self.weight  # no s*s: fp16


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def causal_window_bias(length: int, window: int) -> torch.Tensor:
    """(T, T) additive bias: query i sees keys i-window < j <= i."""
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    allowed = (j <= i) & (j > i - window)
    return (~allowed).float() * NEG


def carried_window_bias(length: int, window: int) -> torch.Tensor:
    """(T, W + T) additive bias for T queries after W carried keys: query i (absolute W + i) sees keys
    i < j <= W + i, i.e. the `window` positions ending at itself, reaching into the carried ones."""
    i = torch.arange(length)[:, None]
    j = torch.arange(window + length)[None, :]
    allowed = (j > i) & (j <= i + window)
    return (~allowed).float() * NEG


def carried_key_bias(seen: torch.Tensor, window: int, length: int) -> torch.Tensor:
    """(B, 1, 1, W + T) bias ruling out carried keys older than the stream: seen (B, 1) bytes seen so far,
    capped at W; carried key j < W holds the byte W - j positions back, real only if seen >= W - j."""
    back = window - torch.arange(window, device=seen.device, dtype=seen.dtype)  # (W,): W .. 1
    ok = torch.cat([(seen >= back).float(), torch.ones_like(seen).expand(-1, length)], dim=1)  # (B, W + T)
    return ((1.0 - ok) * NEG)[:, None, None, :]


def rope_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, head_dim) of rotary position embeddings (rotate-half layout)."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    ang = torch.arange(length).float()[:, None] * inv[None, :]  # (T, hd/2)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, hd) rotated by position, so that q . k depends on the offset between them."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Multi-head attention with an additive bias; queries and keys/values may come from different inputs.
    With `rope_len`, self-attention over that many positions uses rotary position embeddings."""

    def __init__(self, q_dim: int, kv_dim: int, dim: int, heads: int, out_dim: int | None = None,
                 rope_len: int = 0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.rope = rope_len > 0
        if self.rope:
            cos, sin = rope_tables(rope_len, self.head_dim)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
        self.q = nn.Linear(q_dim, dim, bias=False)
        self.k = nn.Linear(kv_dim, dim, bias=False)
        self.v = nn.Linear(kv_dim, dim, bias=False)
        self.o = nn.Linear(dim, out_dim or q_dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # xq (B, Q, q_dim), xkv (B, K, kv_dim), bias broadcastable to (B, H, Q, K)
        return self.attend(xq, self._split(self.k(xkv)), self._split(self.v(xkv)), bias)

    def kv(self, xkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xkv (B, K, kv_dim) -> keys (before RoPE) and values (B, H, K, hd): what a decode step carries, so
        contiguous (an export specialises to its example inputs' strides; runtimes pass contiguous arrays)."""
        return self._split(self.k(xkv)).contiguous(), self._split(self.v(xkv)).contiguous()

    def attend(self, xq: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """forward(xq, xkv, bias) with the keys and values given (B, H, K, hd), as kv(xkv) gives them."""
        q = self._split(self.q(xq))  # (B, H, Q, hd)
        if self.rope:  # keys are positions 0..K-1; queries are the last Q of them (carried keys come first)
            Q, K = q.shape[2], k.shape[2]
            q = apply_rope(q, self.cos[K - Q:K], self.sin[K - Q:K])
            k = apply_rope(k, self.cos[:K], self.sin[:K])
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim)) + bias.to(q.dtype)  # (B, H, Q, K)
        y = torch.softmax(scores, dim=-1) @ v  # (B, H, Q, hd)
        B, _, Q, _ = y.shape
        return self.o(y.transpose(1, 2).reshape(B, Q, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.up = nn.Linear(dim, dim * mult)
        self.down = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up(x)))


class Block(nn.Module):
    """Pre-norm transformer layer: self-attention under an additive bias, then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_mult: int = 4, rope_len: int = 0):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.attn = Attention(dim, dim, dim, heads, rope_len=rope_len)
        self.mlp = MLP(dim, mlp_mult)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, bias)
        return x + self.mlp(self.norm2(x))


class WindowBlock(Block):
    """A byte layer whose attention reaches back into the previous chunk: the normalised inputs of its
    last W positions are carried as state (bounded: RMSNorm outputs) and serve as extra keys/values."""

    def forward(self, x: torch.Tensor, bias: torch.Tensor, past: torch.Tensor):
        # x (B, T, d); past (B, W, d) normalised inputs of the W bytes before this chunk; bias (B, 1, T, W + T)
        h = self.norm1(x)
        kv = torch.cat([past, h], dim=1)  # (B, W + T, d)
        x = x + self.attn(h, kv, bias)
        x = x + self.mlp(self.norm2(x))
        return x, kv[:, -past.shape[1]:]  # (B, T, d), new past (B, W, d)
