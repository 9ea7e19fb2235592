"""Transformer²: factored SVF against the materialised weight; the dispatch pass against whole-stream pooling."""
import torch

from neat.config import preset
from neat.svf import Dispatch, SVFLinear


def make_layer(seed=0):
    torch.manual_seed(seed)
    dense = SVFLinear(12, 20, n_experts=3, max_mult=2.0, factored=False)
    with torch.no_grad():
        dense.bias.normal_()
    return dense, dense.factor(3)


def test_factored_matches_materialised_weight():
    _, svf = make_layer()
    with torch.no_grad():
        svf.Z.normal_(0, 2)
    x = torch.randn(2, 5, 12)
    alpha = torch.softmax(torch.randn(2, 5, 3), -1)
    y = svf(x, alpha)
    z = alpha @ (torch.sigmoid(svf.Z) * 2.0)  # (B, N, r) — the definition, written out again
    z = z * svf.S.sum() / (svf.S * z).sum(-1, keepdim=True)
    for b in range(2):
        for n in range(5):
            W = svf.U @ torch.diag(svf.S * z[b, n]) @ svf.V.T  # materialised W' = U diag(sigma z') V^T
            assert torch.allclose(y[b, n], W @ x[b, n] + svf.bias, atol=1e-5)
    assert torch.allclose((svf.S * svf.scales(alpha)).sum(-1), svf.S.sum().expand(2, 5), rtol=1e-5)


def test_uniform_z_reproduces_the_base_layer():
    dense, svf = make_layer(1)
    x = torch.randn(4, 3, 12)
    alpha = torch.softmax(torch.randn(4, 3, 3), -1)
    with torch.no_grad():
        svf.Z.fill_(1.7)  # any constant: every expert uniform
    assert torch.allclose(svf(x, alpha), dense(x, alpha), atol=1e-5)


@torch.no_grad()
def test_dispatch_over_chunks_equals_pooling_the_whole_stream():
    torch.manual_seed(2)
    cfg = preset("tiny")
    disp = Dispatch(cfg)
    x = torch.randn(2, 30, cfg.global_dim)
    valid = (torch.rand(2, 30) < 0.7).float()
    whole, _ = disp(x, valid, torch.zeros(2, cfg.global_dim + 1))
    state, parts = torch.zeros(2, cfg.global_dim + 1), []
    for sl in (slice(0, 10), slice(10, 30)):
        logits, state = disp(x[:, sl], valid[:, sl], state)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-5)
    # and the representation is the plain running mean of the real (normalised) patch states
    for t in (0, 17, 29):
        real = valid[0, : t + 1].bool()
        rep = disp.norm(x[0, : t + 1])[real].mean(0) if real.any() else torch.zeros(cfg.global_dim)
        want = disp.head(torch.nn.functional.silu(disp.hidden(rep)))
        assert torch.allclose(whole[0, t], want, atol=1e-5)


@torch.no_grad()
def test_dispatch_state_stays_bounded_on_long_streams():
    from neat.svf import DISPATCH_HORIZON

    torch.manual_seed(3)
    cfg = preset("tiny")
    disp = Dispatch(cfg)
    state = torch.zeros(1, cfg.global_dim + 1)
    for _ in range(40):  # 40 chunks of 64 real patches: past the horizon
        x = torch.randn(1, 64, cfg.global_dim) * 3 + 1
        _, state = disp(x, torch.ones(1, 64), state)
    assert float(state[0, -1]) == DISPATCH_HORIZON
    assert float(state[0, :-1].abs().max()) < 10  # a mean, not a sum
    # of normalised states: x = 3 z + 1 has rms sqrt(10), so its normalised entries average 1 / sqrt(10)
    assert torch.allclose(state[0, :-1].mean(), torch.tensor(10 ** -0.5), atol=0.05)
