"""Titans (arXiv 2501.00663): neural long-term memory learned at test time, MAG variant.

The memory is a two-layer residual MLP M(k) = k + silu(k W1) W2 whose weights are per-sequence state.
At each memory chunk it is updated by the closed-form gradient of the associative loss
l = sum_t theta_t ||M(k_t) - v_t||^2 / d (no autograd at inference):
    S = eta * S - grad l,   W = (1 - alpha) * W + S
with data-dependent learning rate theta_t, momentum eta and forgetting alpha (sigmoids of linear maps).
Retrieval y = M(q) inside a memory chunk uses the weights from before that chunk, so it is causal.
q, k and v are l2-normalised.

Bounded by construction, for any input of any length, in fp32 and fp16 (the first version learned
momentum 0.995 and forgetting 0.0005, an effective step of ~190, and its weights ran to NaN after 1.7 KB):
- momentum eta <= ETA_MAX and forgetting alpha >= ALPHA_MIN (scaled sigmoids), learning rate theta <= lr_max;
- each chunk's gradient is clipped to Frobenius norm GRAD_MAX, so ||S|| <= GRAD_MAX / (1 - ETA_MAX) = MOMENTUM_MAX;
- after every update ||S||_F <= MOMENTUM_MAX and ||W||_F <= WEIGHT_MAX per matrix (norm clipping, a no-op
  inside the bound); every element of the memory state is therefore at most WEIGHT_MAX in magnitude.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neat.config import NeatConfig
from neat.layers import l2norm

ETA_MAX = 0.9      # momentum cap
ALPHA_MIN = 0.01   # forgetting floor: an old write halves in ~70 memory updates (~2 KB of text)
GRAD_MAX = 1.0     # Frobenius norm cap of one memory chunk's gradient, per weight matrix
MOMENTUM_MAX = GRAD_MAX / (1.0 - ETA_MAX)  # ||S||_F bound (geometric series of clipped gradients)
WEIGHT_MAX = 16.0  # ||W||_F bound of each memory weight matrix


def clip_norm(x: torch.Tensor, max_norm: float) -> torch.Tensor:
    """x (B, m, n) scaled so that each matrix's Frobenius norm is at most max_norm (unchanged inside).

    fp16-safe: with s = max|x|, the scale is (max_norm / s) / ||x / s||, and neither the sum of squares
    (entries of x / s are <= 1) nor the norm itself (which can exceed 65504) is ever formed in full; an
    infinite max_norm / s (tiny x) clamps to 1. The 1e-4 under the root (irrelevant where clipping acts:
    the sum is >= 1 there) keeps sqrt's gradient finite at 0.
    """
    s = x.abs().amax(dim=(-2, -1), keepdim=True).clamp(min=1e-4)  # (B, 1, 1)
    r = ((x / s).pow(2).sum(dim=(-2, -1), keepdim=True) + 1e-4).sqrt()  # ||x||_F / s
    return x * ((max_norm / s) / r).clamp(max=1.0)


def memory_apply(k: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """M(k) = k + silu(k W1) W2.  k (B, N, d), w1 (B, d, h), w2 (B, h, d) -> (B, N, d)"""
    return k + F.silu(k @ w1) @ w2


def memory_grads(
    k: torch.Tensor, v: torch.Tensor, theta: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form gradient of sum_t theta_t ||M(k_t) - v_t||^2 / d with respect to (W1, W2).

    k, v (B, N, d); theta (B, N, 1); w1 (B, d, h); w2 (B, h, d) -> (B, d, h), (B, h, d)
    """
    d = k.shape[-1]
    z = k @ w1  # (B, N, h)
    sz = torch.sigmoid(z)
    a = z * sz  # silu(z)
    e = (2.0 / d) * theta * (k + a @ w2 - v)  # (B, N, d)
    g_w2 = a.transpose(1, 2) @ e  # (B, h, d)
    dsilu = sz * (1.0 + z * (1.0 - sz))  # silu'(z)
    g_w1 = k.transpose(1, 2) @ ((e @ w2.transpose(1, 2)) * dsilu)  # (B, d, h)
    return g_w1, g_w2


class NeuralMemory(nn.Module):
    """Projects patch states to (q, k, v), retrieves from and updates the per-sequence memory."""

    def __init__(self, cfg: NeatConfig):
        super().__init__()
        D, d, h = cfg.global_dim, cfg.mem_dim, cfg.mem_hidden
        self.chunk, self.lr_max = cfg.mem_chunk, cfg.mem_lr_max
        self.q = nn.Linear(D, d, bias=False)
        self.k = nn.Linear(D, d, bias=False)
        self.v = nn.Linear(D, d, bias=False)
        self.gates = nn.Linear(D, 3)  # theta (learning rate), eta (momentum), alpha (forgetting)
        with torch.no_grad():
            self.gates.bias.copy_(torch.tensor([-2.0, 2.0, -4.0]))
        self.out = nn.Linear(d, D, bias=False)
        # the memory's weights at the start of every sequence (meta-learned by the outer training loop)
        self.w1_init = nn.Parameter(torch.randn(d, h) * d**-0.5)
        self.w2_init = nn.Parameter(torch.zeros(h, d))

    def project(self, x: torch.Tensor, valid: torch.Tensor):
        """x (B, N, D); valid (B, N) -> unit q, k, v (B, N, d), gates (B, N, 3), learning rate theta (B, N, 1)."""
        q, k, v = l2norm(self.q(x)), l2norm(self.k(x)), l2norm(self.v(x))  # (B, N, d), unit vectors
        g = torch.sigmoid(self.gates(x))  # (B, N, 3)
        theta = g[..., 0:1] * self.lr_max * valid[..., None]  # (B, N, 1)
        return q, k, v, g, theta

    def update(self, k, v, g, theta, valid, w1, w2, s1, s2):
        """One memory chunk's update from its C slots: k, v (B, C, d); g (B, C, 3); theta (B, C, 1); valid (B, C).
        A chunk with no real slot leaves memory and momentum as they were."""
        m = valid[:, :, None]  # (B, C, 1)
        count = m.sum(1, keepdim=True)  # (B, 1, 1)
        eta = ETA_MAX * (g[..., 1:2] * m).sum(1, keepdim=True) / count.clamp(min=1.0)  # (B, 1, 1)
        alpha = ALPHA_MIN + (1.0 - ALPHA_MIN) * (g[..., 2:3] * m).sum(1, keepdim=True) / count.clamp(min=1.0)
        g1, g2 = memory_grads(k, v, theta, w1, w2)
        g1, g2 = clip_norm(g1, GRAD_MAX), clip_norm(g2, GRAD_MAX)
        live = (count > 0).to(k.dtype)
        n_s1, n_s2 = clip_norm(eta * s1 - g1, MOMENTUM_MAX), clip_norm(eta * s2 - g2, MOMENTUM_MAX)
        n_w1 = clip_norm((1.0 - alpha) * w1 + n_s1, WEIGHT_MAX)
        n_w2 = clip_norm((1.0 - alpha) * w2 + n_s2, WEIGHT_MAX)
        s1, s2 = live * n_s1 + (1.0 - live) * s1, live * n_s2 + (1.0 - live) * s2
        w1, w2 = live * n_w1 + (1.0 - live) * w1, live * n_w2 + (1.0 - live) * w2
        return w1, w2, s1, s2

    def forward(self, x, valid, w1, w2, s1, s2):
        # x (B, Pm, D); valid (B, Pm) 1 for real patches; w1, s1 (B, d, h); w2, s2 (B, h, d)
        q, k, v, g, theta = self.project(x, valid)
        outs = []
        for c in range(x.shape[1] // self.chunk):  # static number of memory chunks, unrolled
            sl = slice(c * self.chunk, (c + 1) * self.chunk)
            outs.append(memory_apply(q[:, sl], w1, w2))  # retrieve with the weights from before the chunk
            w1, w2, s1, s2 = self.update(k[:, sl], v[:, sl], g[:, sl], theta[:, sl], valid[:, sl], w1, w2, s1, s2)
        y = self.out(torch.cat(outs, dim=1))  # (B, Pm, D)
        return y, w1, w2, s1, s2
