"""Foreign modules with in-place updates, explicit state and control flow (part of the suite in foreign.py)."""
from __future__ import annotations

import torch
from torch import nn


# ----- in-place updates ------------------------------------------------------------------------------
class InPlaceInput(nn.Module):
    """Writes into its input before using it (a model that mutates what it is given)."""

    def forward(self, x):
        x.mul_(2.0).add_(1.0)
        return x.relu().sum(-1)


class BufferCounter(nn.Module):
    """Counts its calls in a buffer updated in place: hidden state an artifact cannot keep."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls.add_(1.0)
        return x * self.calls


class RollingCache(nn.Module):
    """A cache of the last 4 inputs kept in a buffer updated in place (like a KV cache), fixed batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(12)
        self.register_buffer("cache", torch.zeros(1, 4, 6))
        self.proj = nn.Linear(6, 6)

    def forward(self, x):  # x (1, 6)
        self.cache.copy_(torch.cat([self.cache[:, 1:], x[:, None]], dim=1))
        return self.proj(self.cache.mean(1))


# ----- explicit state --------------------------------------------------------------------------------
class GRUStep(nn.Module):
    """A GRU cell over a chunk of steps; the hidden state is explicit, carried across calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(13)
        self.cell = nn.GRUCell(5, 7)
        self.head = nn.Linear(7, 3)

    def forward(self, x, h):  # x (B, 4, 5), h (B, 7)
        ys = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            ys.append(self.head(h))
        return torch.stack(ys, 1), h


class RunningMean(nn.Module):
    """A running mean with its count as int64 state next to a float sum."""

    def forward(self, x, total, count):
        total = total + x.sum(1)
        count = count + x.shape[1]
        return total / count.to(x.dtype), total, count


class Erfinv(nn.Module):
    """An op neither the ONNX exporter nor coremltools can translate: both refuse it with a typed error."""

    def forward(self, x):
        return torch.erfinv(x.clamp(-0.9, 0.9))


# ----- control flow (torch's own export examples) -------------------------------------------------------
class Cond(nn.Module):
    """torch.cond on a tensor predicate, as in torch.export's control-flow examples."""

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: t.sin(), lambda t: t.cos(), (x,))
