"""A small non-NEAT module with explicit state, exported through the same generic path as NEAT."""
import torch
from torch import nn

import exporters
from exporters.spec import ExportSpec

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
    tokens = torch.randint(0, VOCAB, (2, T), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    return exporters.describe(module or ToyCell(), (tokens,), name="toy-cell", state={"h": torch.zeros(2, H)},
                              batch=batch, ranges={"tokens": (0, VOCAB)}, output_names=["logits"],
                              argmax=["logits"], config={"vocab": VOCAB})


def assert_carries_state_like(bundle, backend: str, reference: str):
    """runtimes.load(bundle, backend=...) computes what `reference` computes over three chunks, the state
    carried across them; returns the session."""
    import numpy as np

    import runtimes

    session, ref_session = runtimes.load(bundle, backend=backend), runtimes.load(bundle, backend=reference)
    assert session.backend.target == backend
    tokens = np.arange(16, dtype=np.int32).reshape(2, 8) % 50
    state, ref_state = session.new_state(2), ref_session.new_state(2)
    for _ in range(3):
        (out, state), (ref, ref_state) = session.run(tokens, state), ref_session.run(tokens, ref_state)
        np.testing.assert_allclose(out, ref, atol=1e-5)
    return session, tokens, state
