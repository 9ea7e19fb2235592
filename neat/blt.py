"""BLT (arXiv 2412.09871): entropy model, entropy patching, hash n-gram embeddings, local encoder/decoder.

Static forms only: patches are a one-hot assignment matrix P (B, T, P_max), pooling is a matmul or a
masked amax, cross-attention masks come from P. No scatter, no data-dependent shapes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neat.config import BOI_ID, NEG, NeatConfig
from neat.layers import Attention, Block, RMSNorm, WindowBlock, causal_window_bias
from neat.mvot import ImageCellEmbedding

HASH_BASE = 257  # rolling-hash multiplier; (rows - 1) * 257 + vocab stays far below 2**31


class EntropyModel(nn.Module):
    """Small causal transformer over tokens; its next-token entropy decides where patches start."""

    def __init__(self, cfg: NeatConfig):
        super().__init__()
        T, d = cfg.chunk_len, cfg.ent_dim
        self.tok = nn.Embedding(cfg.vocab_size, d)
        self.pos = nn.Parameter(torch.randn(T, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.ent_heads) for _ in range(cfg.ent_layers))
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.register_buffer("bias", causal_window_bias(T, T), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos  # (B, T, d)
        for block in self.blocks:
            x = block(x, self.bias)
        return self.head(self.norm(x))  # (B, T, V) next-token logits


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum p log p over the last dim, in nats. (B, T, V) -> (B, T)"""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def patch_starts(
    ent_logits: torch.Tensor, tokens: torch.Tensor, prev_token: torch.Tensor, theta: float
) -> torch.Tensor:
    """Boundary indicator b (B, T) as float: 1 where a new patch starts.

    A patch starts at t when the entropy of the prediction of token t (made at t-1) exceeds theta,
    always at t = 0, and at every image token and the token after one (each image token is its own patch).
    """
    B, T = tokens.shape
    H = entropy(ent_logits)  # (B, T): H[:, t] is the uncertainty about token t+1
    h_prev = torch.cat([torch.zeros_like(H[:, :1]), H[:, :-1]], dim=1)  # (B, T): uncertainty about token t
    b = (h_prev > theta).float()
    is_img = (tokens >= BOI_ID).float()  # BOI, EOI and image codes
    prev = torch.cat([prev_token, tokens[:, :-1]], dim=1)  # (B, T) token before t
    after_img = (prev >= BOI_ID).float()
    first = (torch.arange(T, device=tokens.device) == 0).float()[None, :]  # (1, T)
    return torch.maximum(torch.maximum(b, first), torch.maximum(is_img, after_img))


def patch_assignment(b: torch.Tensor, max_patches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """b (B, T) boundaries -> one-hot P (B, T, P_max) and patch ids (B, T) as float.

    pid = cumsum(b) - 1, clamped to P_max - 1 (the last slot absorbs any overflow).
    """
    pid = (torch.cumsum(b, dim=1) - 1.0).clamp(max=max_patches - 1)  # (B, T)
    slots = torch.arange(max_patches, device=b.device, dtype=b.dtype)
    P = (pid[..., None] == slots).float()  # (B, T, P_max)
    return P, pid


def mean_pool(x: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """x (B, T, C), P (B, T, Pm) -> (B, Pm, C) mean of each patch's bytes (zeros for empty slots)."""
    count = P.sum(1)[..., None]  # (B, Pm, 1)
    return (P.transpose(1, 2) @ x) / count.clamp(min=1.0)


def max_pool(x: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """x (B, T, C), P (B, T, Pm) -> (B, Pm, C) elementwise max over each patch's bytes (zeros if empty)."""
    masked = x[:, :, None, :] + (P[..., None] - 1.0) * 1.0e4  # (B, T, Pm, C)
    valid = (P.sum(1) > 0).to(x.dtype)[..., None]  # (B, Pm, 1)
    return masked.amax(dim=1) * valid


def max_pool_scatter(x: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """max_pool(x, P), the same values, by a scatter: no (B, T, Pm, C) tensor, whose backward was half a
    training step. For training only (the exported graph keeps the static form, see the module docstring)."""
    idx = P.argmax(-1)[..., None].expand_as(x)  # (B, T, C) each byte's patch slot
    empty = x.new_zeros(x.shape[0], P.shape[-1], x.shape[-1])  # (B, Pm, C): slots no byte reaches stay 0
    return empty.scatter_reduce(1, idx, x, reduce="amax", include_self=False)


def ngram_hashes(ext_tokens: torch.Tensor, n: int, rows: int, length: int) -> torch.Tensor:
    """int32 rolling hash of the n tokens ending at each of the last `length` positions.

    ext_tokens (B, length + k) int32 with k >= n - 1 tokens of left context. Reduced mod `rows` at
    every step, so every intermediate fits int32 (CoreML has no int64 arithmetic).
    """
    start = ext_tokens.shape[1] - length
    h = torch.zeros_like(ext_tokens[:, start:])
    for i in range(n):
        off = start - (n - 1) + i
        h = (h * HASH_BASE + ext_tokens[:, off : off + length] + 1) % rows
    return h  # (B, T) int32 in [0, rows)


class LocalEncoder(nn.Module):
    """Byte embeddings + hash n-grams -> windowed byte layer (reaching into the previous chunk through its
    carried window) -> patch queries refined by cross-attention."""

    def __init__(self, cfg: NeatConfig):
        super().__init__()
        d, D = cfg.local_dim, cfg.global_dim
        self.cfg = cfg
        self.context = max(cfg.hash_ngrams) - 1
        self.tok = nn.Embedding(cfg.vocab_size, d)
        self.pos = nn.Parameter(torch.randn(cfg.chunk_len, d) * 0.02)
        self.hash = nn.ModuleList(nn.Embedding(cfg.hash_rows, d) for _ in cfg.hash_ngrams)
        self.cell = ImageCellEmbedding(cfg, d)
        self.block = WindowBlock(d, cfg.local_heads, rope_len=cfg.local_window + cfg.chunk_len)
        self.pool = nn.Linear(2 * d, D)
        self.norm_q, self.norm_kv = RMSNorm(D), RMSNorm(d)
        self.cross = Attention(D, d, D, cfg.global_heads)

    def embed(self, tokens: torch.Tensor, context: torch.Tensor, modality: torch.Tensor,
              pos: torch.Tensor) -> torch.Tensor:
        # tokens (B, T) int32; context (B, k) int32; modality (B, 2); pos (T, d) or (B, T, d) position embeddings
        T = tokens.shape[1]
        ext = torch.cat([context, tokens], dim=1)  # (B, k + T) int32
        x = self.tok(tokens) + pos + self.cell(tokens, modality)  # (B, T, d)
        for n, table in zip(self.cfg.hash_ngrams, self.hash):
            x = x + table(ngram_hashes(ext, n, self.cfg.hash_rows, T))
        return x

    def forward(self, tokens, context, modality, P, past, byte_bias):
        # tokens (B, T) int32; context (B, k) int32; modality (B, 2); P (B, T, Pm); past (B, W, d);
        # byte_bias (B, 1, T, W + T) from the model (carried window + stream start)
        x, new_past = self.block(self.embed(tokens, context, modality, self.pos), byte_bias, past)  # (B, T, d)
        q = self.patches(x, P)
        new_context = torch.cat([context, tokens], dim=1)[:, -self.context :]  # (B, k)
        return x, q, new_context, new_past

    def patches(self, x: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) byte states, P (B, T, Pm) assignment -> (B, Pm, D) patch encodings: pooled queries
        refined by cross-attention to their own bytes."""
        return self.pooled(x, P, *self.cross.kv(self.norm_kv(x)))

    def pooled(self, x: torch.Tensor, P: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """patches(x, P) with the cross-attention's keys and values of the bytes given, k, v (B, H, T, hd) as
        self.cross.kv(self.norm_kv(x)) makes them (a decode step carries them, one row per byte)."""
        maxed = (max_pool_scatter if self.training else max_pool)(x, P)  # (B, Pm, d)
        q = self.pool(torch.cat([mean_pool(x, P), maxed], dim=-1))  # (B, Pm, D)
        bias = (P.transpose(1, 2) - 1.0) * -NEG  # (B, Pm, T): a patch sees only its own bytes
        return q + self.cross.attend(self.norm_q(q), k, v, bias[:, None])


class LocalDecoder(nn.Module):
    """Bytes cross-attend to the global outputs of earlier patches (shifted by one), then a byte layer
    with a carried window like the encoder's."""

    def __init__(self, cfg: NeatConfig):
        super().__init__()
        d, D = cfg.local_dim, cfg.global_dim
        self.max_patches = cfg.max_patches
        self.norm_q, self.norm_kv = RMSNorm(d), RMSNorm(D)
        self.cross = Attention(d, D, d, cfg.local_heads)
        self.block = WindowBlock(d, cfg.local_heads, rope_len=cfg.local_window + cfg.chunk_len)
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)

    def forward(self, x, g_shift, pid, past, byte_bias):
        # x (B, T, d) encoder bytes; g_shift (B, Pm, D): slot s holds the global output of patch s-1
        # (slot 0: the last patch of the previous chunk); pid (B, T) patch id of each byte.
        y, new_past = self.block(self.read(x, g_shift, pid), byte_bias, past)
        return self.head(self.norm(y)), new_past  # (B, T, V), (B, W, d)

    def read(self, x: torch.Tensor, g_shift: torch.Tensor, pid: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) bytes plus their cross-attention to the slots up to their patch id pid (B, T)."""
        slots = torch.arange(self.max_patches, device=x.device, dtype=pid.dtype)
        seen = (slots[None, None, :] <= pid[..., None]).float()  # (B, T, Pm): patches before this byte's
        return x + self.cross(self.norm_q(x), self.norm_kv(g_shift), ((1.0 - seen) * NEG)[:, None])
