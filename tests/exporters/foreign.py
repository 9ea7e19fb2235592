"""Small models nobody on this project wrote for NEAT: the generic exporters' public test suite.

Each `Case` is a module, its example inputs, the `exporters.describe` options a user would pass, and what
each target must say: "passed", or the name of the typed error where the target cannot express the model
(listed in the README's support table). Written here for the test suite; sizes are tiny so that every
target builds in seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from foreign_state import BufferCounter, Cond, Erfinv, GRUStep, InPlaceInput, RollingCache, RunningMean

G = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=G)


def ids(high, *shape, dtype=torch.int64):
    return torch.randint(0, high, shape, generator=G, dtype=dtype)


# ----- attention -------------------------------------------------------------------------------------
class GPT(nn.Module):
    """A GPT-style decoder: token and position embeddings, a causal mask buffer sliced to the length,
    pre-norm blocks with GELU MLPs, a head tied to the embedding. int64 token ids in, logits out."""

    def __init__(self, vocab=64, dim=32, heads=4, layers=2, ctx=16):
        super().__init__()
        torch.manual_seed(1)
        self.heads = heads
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(ctx, dim)
        self.register_buffer("mask", torch.tril(torch.ones(1, 1, ctx, ctx)))
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(dim), "qkv": nn.Linear(dim, 3 * dim), "proj": nn.Linear(dim, dim),
            "ln2": nn.LayerNorm(dim), "up": nn.Linear(dim, 4 * dim), "down": nn.Linear(4 * dim, dim),
        }) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)

    def forward(self, idx):
        B, L = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(L))  # (B, L, C)
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).split(x.shape[-1], dim=-1)
            q, k, v = (t.view(B, L, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, L, c)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            att = att.masked_fill(self.mask[:, :, :L, :L] == 0, float("-inf")).softmax(-1)
            x = x + b["proj"]((att @ v).transpose(1, 2).reshape(B, L, -1))
            x = x + b["down"](F.gelu(b["up"](b["ln2"](x))))
        return self.ln(x) @ self.tok.weight.T  # (B, L, V)


class SDPA(nn.Module):
    """torch's fused attention with is_causal."""

    def __init__(self, dim=24, heads=3):
        super().__init__()
        torch.manual_seed(2)
        self.heads, self.qkv, self.out = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        B, L, C = x.shape
        q, k, v = (t.view(B, L, self.heads, -1).transpose(1, 2) for t in self.qkv(x).split(C, dim=-1))
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, L, C))


class PaddedAttention(nn.Module):
    """Attention over keys with a bool padding mask input (True = a real key)."""

    def __init__(self, dim=16):
        super().__init__()
        torch.manual_seed(3)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x, keep):
        s = self.q(x) @ self.k(x).transpose(1, 2) / 4.0  # (B, L, L)
        s = s.masked_fill(~keep[:, None, :], -1e9)
        return s.softmax(-1) @ self.v(x)


class EncoderLayer(nn.Module):
    """torch's own nn.TransformerEncoderLayer (batch first)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.layer(x)


# ----- convolution -----------------------------------------------------------------------------------
class ConvNet(nn.Module):
    """conv / batch-norm / ReLU / max-pool, twice, then global average pooling and a classifier."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, 10)
        _randomise_norm_stats(self)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Conv1dNet(nn.Module):
    """Grouped, dilated 1-d convolution with 'same' padding, average pooling, batch-norm."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv1d(4, 8, 3, padding="same", dilation=2, groups=2)
        self.norm = nn.BatchNorm1d(8)
        self.pool = nn.AvgPool1d(2)
        _randomise_norm_stats(self)

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpsampleGroupNorm(nn.Module):
    """Nearest-neighbour upsampling, depthwise conv, group norm, SiLU."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.norm = nn.GroupNorm(2, 4)

    def forward(self, x):
        return F.silu(self.norm(self.depthwise(F.interpolate(x, scale_factor=2, mode="nearest"))))


def _randomise_norm_stats(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=G) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=G) + 0.5)


# ----- embeddings, indexing ---------------------------------------------------------------------------
class GatherRows(nn.Module):
    """Embedding lookup, then torch.gather with an int64 index input along the feature dim."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(8)
        self.emb = nn.Embedding(20, 12)

    def forward(self, tokens, index):
        return torch.gather(self.emb(tokens), 2, index)  # (B, L, 12) -> (B, L, K)


class IndexSelect(nn.Module):
    """Columns picked by an index tensor without a batch dimension."""

    def forward(self, x, cols):
        return x[:, cols] * 2.0


class Int64Argmax(nn.Module):
    """int64 ids in, the argmax class (int64) and the scores out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.emb, self.head = nn.Embedding(30, 8), nn.Linear(8, 5)

    def forward(self, tokens):
        scores = self.head(self.emb(tokens).mean(1))  # (B, 5)
        return scores.argmax(-1), scores


# ----- outputs -----------------------------------------------------------------------------------------
class DictOutputs(nn.Module):
    """A dict of outputs, one of them nested in a tuple."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(10)
        self.mu, self.logvar = nn.Linear(6, 3), nn.Linear(6, 3)

    def forward(self, x):
        return {"mu": self.mu(x), "stats": (self.logvar(x), x.norm(dim=-1))}


class ScalarLike(nn.Module):
    """A per-example scalar (B,) and a true 0-d scalar over the whole batch."""

    def forward(self, x):
        return x.pow(2).sum(dim=(1, 2)), x.mean()


class ReturnsInput(nn.Module):
    """Returns one of its inputs unchanged next to a computed output."""

    def forward(self, x, y):
        return x * 2.0 + y, y


class BoolIO(nn.Module):
    """A bool mask in, a bool output (which entries pass a threshold) and a masked value out."""

    def forward(self, x, mask):
        return x > 0.5, torch.where(mask, x, torch.zeros_like(x))


class Half(nn.Module):
    """A model kept in float16 end to end (float16 input and output)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.lin = nn.Linear(8, 8).half()

    def forward(self, x):
        return torch.tanh(self.lin(x))


@dataclass
class Case:
    name: str
    make: Callable[[], nn.Module]
    inputs: Callable[[], tuple]
    options: dict = field(default_factory=dict)
    # target -> "passed" or the typed error's class name; targets not listed must pass
    expect: dict = field(default_factory=dict)
    describe_error: str = ""  # the typed error describe() raises for this case, if any


CASES = [
    Case("gpt", GPT, lambda: (ids(64, 2, 16),), {"argmax": ["output"], "batch": (1, 4)}),
    Case("sdpa", SDPA, lambda: (randn(2, 10, 24),), {"batch": (1, 3)}),
    Case("padded_attention", PaddedAttention,
         lambda: (randn(2, 6, 16), torch.tensor([[True] * 6, [True] * 4 + [False] * 2]))),
    Case("encoder_layer", EncoderLayer, lambda: (randn(2, 5, 16),)),
    Case("conv_net", ConvNet, lambda: (randn(2, 3, 16, 16),), {"batch": (1, 4)}),
    Case("conv1d", Conv1dNet, lambda: (randn(2, 4, 20),)),
    Case("upsample_groupnorm", UpsampleGroupNorm, lambda: (randn(1, 4, 6, 6),)),
    Case("gather", GatherRows, lambda: (ids(20, 2, 5), ids(12, 2, 5, 3))),
    Case("index_select", IndexSelect, lambda: (randn(3, 10), torch.tensor([0, 7, 3])), {"unbatched": ["cols"]}),
    Case("int64_argmax", Int64Argmax, lambda: (ids(30, 2, 7),)),
    Case("dict_outputs", DictOutputs, lambda: (randn(2, 6),)),
    Case("scalar_like", ScalarLike, lambda: (randn(2, 3, 4),)),
    Case("returns_input", ReturnsInput, lambda: (randn(2, 5), randn(2, 5))),
    Case("bool_io", BoolIO, lambda: (torch.rand(2, 8, generator=G), torch.rand(2, 8, generator=G) > 0.3)),
    Case("half", Half, lambda: (randn(2, 8).half(),)),
    Case("inplace_input", InPlaceInput, lambda: (randn(2, 9),)),
    Case("buffer_counter_refused", BufferCounter, lambda: (randn(2, 3),), describe_error="SpecError"),
    Case("buffer_counter_lifted", BufferCounter, lambda: (randn(2, 3),), {"lift_buffers": True}),
    Case("rolling_cache", RollingCache, lambda: (randn(1, 6),), {"lift_buffers": True}),
    Case("gru_state", GRUStep, lambda: (randn(2, 4, 5), torch.zeros(2, 7)), {"state": ["h"], "batch": (1, 3)}),
    Case("running_mean_int_state", RunningMean,
         lambda: (randn(2, 3, 4), torch.zeros(2, 4), torch.zeros(2, 1, dtype=torch.int64)),
         {"state": ["total", "count"]}),
    Case("cond", Cond, lambda: (randn(2, 4),)),
    Case("erfinv", Erfinv, lambda: (randn(2, 5),), expect={"onnx": "ConversionError", "coreml": "ConversionError"}),
]
