"""Titans (arXiv 2501.00663): neural long-term memory learned at test time, MAG variant.

The memory is a two-layer residual MLP M(k) = k + silu(k W1) W2 whose weights are per-sequence state.
At each memory chunk it is updated by the closed-form gradient of the associative loss
l = sum_t theta_t ||M(k_t) - v_t||^2 / d (no autograd at inference):
    S = eta * S - grad l,   W = (1 - alpha) * W + S
with data-dependent learning rate theta_t, momentum eta and forgetting alpha (sigmoids of linear maps).
Retrieval y = M(q) inside a memory chunk uses the weights from before that chunk, so it is causal.
q, k and v are l2-normalised: with unit keys and values the memory's effective step size stays bounded
(unnormalised values made the two-layer memory's weights, and so its step size, blow up in training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neat.config import NeatConfig
from neat.layers import l2norm


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

    def forward(self, x, valid, w1, w2, s1, s2):
        # x (B, Pm, D); valid (B, Pm) 1 for real patches; w1, s1 (B, d, h); w2, s2 (B, h, d)
        q, k, v = l2norm(self.q(x)), l2norm(self.k(x)), l2norm(self.v(x))  # (B, Pm, d), unit vectors
        g = torch.sigmoid(self.gates(x))  # (B, Pm, 3)
        theta = g[..., 0:1] * self.lr_max * valid[..., None]  # (B, Pm, 1)
        outs = []
        for c in range(x.shape[1] // self.chunk):  # static number of memory chunks, unrolled
            sl = slice(c * self.chunk, (c + 1) * self.chunk)
            outs.append(memory_apply(q[:, sl], w1, w2))  # retrieve with the weights from before the chunk
            m = valid[:, sl, None]  # (B, C, 1)
            count = m.sum(1, keepdim=True)  # (B, 1, 1)
            eta = (g[:, sl, 1:2] * m).sum(1, keepdim=True) / count.clamp(min=1.0)  # (B, 1, 1)
            alpha = (g[:, sl, 2:3] * m).sum(1, keepdim=True) / count.clamp(min=1.0)
            g1, g2 = memory_grads(k[:, sl], v[:, sl], theta[:, sl], w1, w2)
            live = (count > 0).float()  # a chunk with no real patch leaves memory and momentum as they were
            n_s1, n_s2 = eta * s1 - g1, eta * s2 - g2
            n_w1, n_w2 = (1.0 - alpha) * w1 + n_s1, (1.0 - alpha) * w2 + n_s2
            s1, s2 = live * n_s1 + (1.0 - live) * s1, live * n_s2 + (1.0 - live) * s2
            w1, w2 = live * n_w1 + (1.0 - live) * w1, live * n_w2 + (1.0 - live) * w2
        y = self.out(torch.cat(outs, dim=1))  # (B, Pm, D)
        return y, w1, w2, s1, s2
