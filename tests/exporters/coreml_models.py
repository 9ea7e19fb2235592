"""Small modules that exercise what a generic CoreML export has to handle, each with its ExportSpec.

Every forward returns a flat tuple (outputs, no state). Shapes in comments: B is the batch.
"""
import torch
from torch import nn

from exporters.spec import ExportSpec, TensorInfo, weights_sha256


class ConvNet(nn.Module):
    """Conv2d + BatchNorm2d + ReLU + MaxPool2d + AvgPool2d (ceil mode) + AdaptiveAvgPool2d + Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 5)
        with torch.no_grad():  # running statistics that are not the identity
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):                                # (B, 3, 16, 16)
        x = self.pool(torch.relu(self.bn(self.conv1(x))))  # (B, 8, 8, 8)
        x = self.avg(torch.relu(self.conv2(x)))          # (B, 8, 2, 2)
        return (self.head(self.gap(x).flatten(1)),)      # (B, 5)


class Conv1dNet(nn.Module):
    """Grouped, dilated, strided and "same"-padded 1-D convolutions."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(4, 8, 3, groups=2, dilation=2, padding=2)
        self.b = nn.Conv1d(8, 8, 4, groups=8, padding="same")
        self.c = nn.Conv1d(8, 6, 3, stride=2)

    def forward(self, x):                                # (B, 4, 20)
        x = torch.nn.functional.gelu(self.a(x))          # (B, 8, 20)
        return (self.c(torch.tanh(self.b(x))),)          # (B, 6, 9)


class TokenModel(nn.Module):
    """int64 token ids in, logits and the int64 argmax out."""

    def __init__(self, vocab=40, dim=12):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):                           # (B, T) int64
        logits = self.head(torch.tanh(self.emb(tokens)))  # (B, T, V)
        return logits, logits.argmax(-1)                 # argmax: (B, T) int64


class MaskedMean(nn.Module):
    """A bool mask in, a bool output out: the mean over the kept positions, and which rows kept any."""

    def forward(self, x, keep):                          # (B, T, C), (B, T) bool
        w = keep.to(x.dtype)[..., None]
        mean = (x * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, C)
        return mean, keep.any(-1), ~keep                 # (B, C), (B,) bool, (B, T) bool


class BoolLogic(nn.Module):
    """Bool tensors combined with | and ^ (coremltools converts only & and ~ of the bitwise ops), and a clamp
    whose bounds mix a float and an int (the ONNX exporter's type promotion then rejects it)."""

    def forward(self, x, keep):                          # (B, 6), (B, 6) bool
        hot = (x > 0.5) | keep
        odd = (x < -0.5) ^ keep
        return x.clamp(min=0.0, max=1) + hot.to(x.dtype), hot, odd  # (B, 6) each


class CausalAttention(nn.Module):
    """nanoGPT-style attention: a causal mask buffer sliced to the sequence length (here its full size,
    which torch.export records as aten.alias)."""

    def __init__(self, dim=8, heads=2, block=16):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("mask", torch.tril(torch.ones(1, 1, block, block)))

    def forward(self, x):                                # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, h, T, d)
        att = (q @ k.transpose(-2, -1)) * (1.0 / (C // self.heads) ** 0.5)
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return (self.proj(y),)


class ReturnsInput(nn.Module):
    def forward(self, x):
        return x * 2, x


class Unbatched(nn.Module):
    """A batched input, an unbatched one (a fixed-shape table) and an unbatched output."""

    def forward(self, x, table):                         # (B, 4), (4, 3) unbatched
        return x @ table, table.sum(0)                   # (B, 3), (3,) unbatched


class Branch(nn.Module):
    """torch.cond on a tensor predicate (coremltools has no conversion: inlined as both branches + where)."""

    def forward(self, x):
        return (torch.cond(x.sum() > 0, lambda t: t.sin(), lambda t: t.cos() * 2, (x,)),)


class GRUCellStep(nn.Module):
    """aten.gru_cell has no coremltools conversion: lowered with torch's own decomposition."""

    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(5, 7)

    def forward(self, x, h):                             # (B, 5), (B, 7)
        return (self.cell(x, h),)


class GridSample(nn.Module):
    """Converts (to MIL resample) but the NumPy evaluator cannot compute it: "not verified"."""

    def forward(self, x, grid):                          # (B, C, H, W), (B, h, w, 2)
        return (torch.nn.functional.grid_sample(x, grid, align_corners=False),)


class Unsupported(nn.Module):
    def forward(self, x):
        return (torch.erfinv(torch.tanh(x)),)


class BoolMaskMHA(nn.Module):
    """Embedding, nn.MultiheadAttention with a bool causal attn_mask buffer (True: not attended), a head.
    torch turns the mask into zeros_like(mask, dtype=float).masked_fill(mask, -inf), whose dtype= keyword
    coremltools ignored: the mask stayed bool, read as "attend where True" (issue 31)."""

    def __init__(self, vocab=64, dim=32, block=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("mask", torch.triu(torch.ones(block, block, dtype=torch.bool), 1))

    def forward(self, idx):                              # (B, T) -> (B, T, vocab)
        x, T = self.embed(idx), idx.shape[1]
        y, _ = self.attn(x, x, x, attn_mask=self.mask[:T, :T], need_weights=False)
        return (self.head(y),)


def spec(name, module, inputs, outputs, batch=(1, 3)) -> ExportSpec:
    torch.manual_seed(0)
    module = module.eval()
    return ExportSpec(name=name, module=module, inputs=tuple(inputs), state=(), outputs=tuple(outputs),
                      init_state=lambda b: (), batch=batch, weights_sha256=weights_sha256(module))


def f32(name, *shape, batched=True):
    return TensorInfo(name, "float32", tuple(shape), batched=batched)


def specs() -> dict[str, ExportSpec]:
    torch.manual_seed(0)
    return {
        "convnet": spec("convnet", ConvNet(), [f32("x", 3, 16, 16)], [f32("y", 5)]),
        "conv1d": spec("conv1d", Conv1dNet(), [f32("x", 4, 20)], [f32("y", 6, 9)]),
        "tokens": spec("tokens", TokenModel(), [TensorInfo("tokens", "int64", (7,), (0, 40))],
                       [f32("logits", 7, 40), TensorInfo("best", "int64", (7,))]),
        "masked": spec("masked", MaskedMean(), [f32("x", 6, 4), TensorInfo("keep", "bool", (6,))],
                       [f32("mean", 4), TensorInfo("any_kept", "bool", ()), TensorInfo("dropped", "bool", (6,))]),
        "attention": spec("attention", CausalAttention(), [f32("x", 16, 8)], [f32("y", 16, 8)]),
        "bool_logic": spec("bool-logic", BoolLogic(), [f32("x", 6), TensorInfo("keep", "bool", (6,))],
                           [f32("y", 6), TensorInfo("hot", "bool", (6,)), TensorInfo("odd", "bool", (6,))]),
        "returns_input": spec("returns-input", ReturnsInput(), [f32("x", 5)], [f32("twice", 5), f32("same", 5)]),
        "cond": spec("cond", Branch(), [f32("x", 4)], [f32("y", 4)]),
        "gru_cell": spec("gru-cell", GRUCellStep(), [f32("x", 5), f32("h", 7)], [f32("h_next", 7)]),
        "bool_mask_mha": spec("bool-mask-mha", BoolMaskMHA(), [TensorInfo("idx", "int64", (8,), (0, 64))],
                              [f32("logits", 8, 64)]),
        "unbatched": spec("unbatched", Unbatched(), [f32("x", 4), f32("table", 4, 3, batched=False)],
                          [f32("y", 3), f32("colsum", 3, batched=False)]),
    }
