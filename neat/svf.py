"""Transformer² (arXiv 2501.06252): singular-value fine-tuning (SVF) and the dispatch pass.

An adapted weight is W = U diag(sigma) V^T (SVD taken once, at build time). Expert k is a vector z_k;
with a mix alpha over experts, z' = alpha @ (sigmoid(Z) * max_mult), rescaled so sum(sigma z') = sum(sigma),
and the layer computes y = ((x V) * (sigma z')) U^T + b without ever materialising W'.
"""
from __future__ import annotations

import torch
from torch import nn

from neat.config import NeatConfig
from neat.layers import RMSNorm


class SVFLinear(nn.Module):
    """A linear layer that is dense while the base model trains and SVF-factored afterwards."""

    def __init__(self, in_f: int, out_f: int, n_experts: int, max_mult: float, factored: bool):
        super().__init__()
        self.max_mult, self.factored = max_mult, factored
        r = min(in_f, out_f)
        if factored:
            self.U = nn.Parameter(torch.zeros(out_f, r), requires_grad=False)
            self.S = nn.Parameter(torch.zeros(r), requires_grad=False)
            self.V = nn.Parameter(torch.zeros(in_f, r), requires_grad=False)
            self.Z = nn.Parameter(torch.zeros(n_experts, r))  # sigmoid(0) * 2 = 1: every expert starts as W
        else:
            self.weight = nn.Parameter(torch.randn(out_f, in_f) * in_f**-0.5)
        self.bias = nn.Parameter(torch.zeros(out_f))

    @torch.no_grad()
    def factor(self, n_experts: int) -> "SVFLinear":
        """The build step: a factored copy whose uniform z' reproduces this dense layer."""
        out_f, in_f = self.weight.shape
        new = SVFLinear(in_f, out_f, n_experts, self.max_mult, factored=True)
        U, S, Vh = torch.linalg.svd(self.weight.double(), full_matrices=False)
        new.U.copy_(U.float()), new.S.copy_(S.float()), new.V.copy_(Vh.T.float()), new.bias.copy_(self.bias)
        return new

    def scales(self, alpha: torch.Tensor) -> torch.Tensor:
        """alpha (B, N, K) expert mix -> (B, N, r) rescaled z' (sum(sigma z') = sum(sigma))."""
        z = alpha @ (torch.sigmoid(self.Z) * self.max_mult)  # (B, N, r)
        return z * (self.S.sum() / (z * self.S).sum(-1, keepdim=True))

    def forward(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        # x (B, N, in); alpha (B, N, K)
        if not self.factored:
            return x @ self.weight.T + self.bias
        return ((x @ self.V) * (self.S * self.scales(alpha))) @ self.U.T + self.bias  # (B, N, out)


class SVFMLP(nn.Module):
    def __init__(self, cfg: NeatConfig):
        super().__init__()
        D, K = cfg.global_dim, cfg.n_experts
        args = (K, cfg.svf_max_mult, cfg.svf_factored)
        self.up = SVFLinear(D, D * cfg.mlp_mult, *args)
        self.down = SVFLinear(D * cfg.mlp_mult, D, *args)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.up(x, alpha)), alpha)


DISPATCH_HORIZON = 1024.0  # patch states; beyond this the running mean becomes a moving average


class Dispatch(nn.Module):
    """Pass 1: classify the input so far into the K expert tasks.

    Streaming-causal form: the representation of patch slot p is the mean of every patch state up to p,
    carried across chunks by the state (running mean, count), so a chunked stream classifies exactly as
    the whole stream would. The count is capped at DISPATCH_HORIZON, after which the mean is a moving
    average over about that many patches. The mean is taken of RMS-normalised patch states, so every
    state value is bounded by construction: |mean| <= sqrt(D) * max|norm.weight|, count <= DISPATCH_HORIZON.
    """

    def __init__(self, cfg: NeatConfig):
        super().__init__()
        D = cfg.global_dim
        self.norm = RMSNorm(D)
        self.hidden = nn.Linear(D, D)
        self.head = nn.Linear(D, cfg.n_experts)

    def forward(self, patches: torch.Tensor, valid: torch.Tensor, state: torch.Tensor):
        # patches (B, Pm, D); valid (B, Pm); state (B, D + 1) = [running mean | count]
        mean, n = state[:, None, :-1], state[:, None, -1:]  # (B, 1, D), (B, 1, 1)
        patches = self.norm(patches)  # bounded: the mean of bounded vectors stays within their bound
        csum = torch.cumsum(patches * valid[..., None], dim=1)  # (B, Pm, D), within the chunk only
        ccount = torch.cumsum(valid, dim=1)[..., None]  # (B, Pm, 1)
        rep = running_mean(mean, n, csum, ccount)  # mean of all patch states so far
        logits = self.head(torch.nn.functional.silu(self.hidden(rep)))  # (B, Pm, K)
        new_state = torch.cat([rep[:, -1], (n[:, 0] + ccount[:, -1]).clamp(max=DISPATCH_HORIZON)], dim=-1)
        return logits, new_state  # (B, Pm, K), (B, D + 1)


def running_mean(mean: torch.Tensor, n: torch.Tensor, csum: torch.Tensor, ccount: torch.Tensor) -> torch.Tensor:
    """Mean of n earlier states (their mean `mean`) and ccount new ones summing to csum; n + ccount >= 1 or zeros."""
    return mean + (csum - ccount * mean) / (n + ccount).clamp(min=1.0)
