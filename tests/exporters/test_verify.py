"""Verification catches a model whose state diverges only on a long stream (even eager against eager)."""
import torch
from torch import nn

from exporters.spec import ExportSpec, TensorInfo, weights_sha256
from exporters.verify import reference_runner, verify

T, H, V = 4, 3, 5


class Diverging(nn.Module):
    """The state doubles every chunk: the logits (its sum) are finite for ~125 chunks, then inf."""

    def forward(self, tokens, h):
        h = 2.0 * h + 1.0  # (B, H)
        logits = tokens[..., None].float() * 0.0 + h.sum(-1)[:, None, None]  # (B, T, 1)
        return logits.expand(-1, -1, V).contiguous(), h


def spec(long_chunks: int) -> ExportSpec:
    module = Diverging().eval()
    return ExportSpec(
        name="diverging", module=module,
        inputs=(TensorInfo("tokens", "int32", (T,), (0, V)),),
        state=(TensorInfo("h", "float32", (H,)),),
        outputs=(TensorInfo("logits", "float32", (T, V)),),
        init_state=lambda b: (torch.zeros(b, H),), batch=(1, 1), weights_sha256=weights_sha256(module),
        real_data=lambda b, n: [(torch.zeros(b, T, dtype=torch.int32),) for _ in range(n)],
        long_stream_chunks=long_chunks,
    )


def test_a_state_that_diverges_after_many_chunks_fails_verification_only_with_the_long_stream():
    short = spec(0)
    assert verify(short, reference_runner(short), "fp32", "executed").verdict == "passed"  # few chunks: unseen
    long = spec(200)
    parity = verify(long, reference_runner(long), "fp32", "executed")
    assert parity.verdict == "failed"
    assert "not finite" in parity.notes and "diverges" in parity.notes
    assert any(c["chunks"] == 200 for c in parity.cases)
