"""A small non-NEAT module with explicit state, exported through the same generic path as NEAT."""
import torch
from torch import nn

from exporters.spec import ExportSpec, TensorInfo, weights_sha256

VOCAB, T, H = 50, 8, 16


class ToyCell(nn.Module):
    """Tokens in, logits out, a recurrent state carried across chunks: forward(tokens, h) -> (logits, h)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(VOCAB, H)
        self.mix = nn.Linear(2 * H, H)
        self.head = nn.Linear(H, VOCAB)

    def forward(self, tokens: torch.Tensor, h: torch.Tensor):
        x = self.emb(tokens)  # (B, T, H)
        ctx = torch.cumsum(x, dim=1) / torch.arange(1, T + 1, dtype=x.dtype)[None, :, None]  # causal mean
        y = torch.tanh(self.mix(torch.cat([ctx, h[:, None, :].expand_as(ctx)], dim=-1)))  # (B, T, H)
        return self.head(y), y[:, -1]


def toy_spec(module: nn.Module | None = None, batch=(1, 3)) -> ExportSpec:
    module = (module or ToyCell()).eval()
    return ExportSpec(
        name="toy-cell", module=module,
        inputs=(TensorInfo("tokens", "int32", (T,), (0, VOCAB)),),
        state=(TensorInfo("h", "float32", (H,)),),
        outputs=(TensorInfo("logits", "float32", (T, VOCAB)),),
        init_state=lambda b: (torch.zeros(b, H),),
        batch=batch, config={"vocab": VOCAB}, weights_sha256=weights_sha256(module),
    )
