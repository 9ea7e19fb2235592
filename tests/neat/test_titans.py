"""Titans memory: closed-form gradient against autograd, and the chunked update against a plain loop."""
import torch

from neat.config import preset
from neat.titans import (ALPHA_MIN, ETA_MAX, GRAD_MAX, MOMENTUM_MAX, WEIGHT_MAX, NeuralMemory, clip_norm,
                         memory_apply, memory_grads)


def clipped(x, max_norm):
    """Reference norm clipping: x * min(1, max_norm / ||x||_F)."""
    return x * min(1.0, max_norm / float(torch.linalg.matrix_norm(x).detach()))


def test_closed_form_gradient_matches_autograd():
    g = torch.Generator().manual_seed(0)
    B, N, d, h = 3, 7, 6, 5
    k, v = torch.randn(B, N, d, generator=g), torch.randn(B, N, d, generator=g)
    theta = torch.rand(B, N, 1, generator=g)
    w1 = torch.randn(B, d, h, generator=g, requires_grad=True)
    w2 = torch.randn(B, h, d, generator=g, requires_grad=True)
    loss = (theta * (memory_apply(k, w1, w2) - v).pow(2)).sum() / d
    a1, a2 = torch.autograd.grad(loss, (w1, w2))
    c1, c2 = memory_grads(k, v, theta, w1.detach(), w2.detach())
    assert torch.allclose(c1, a1, atol=1e-5) and torch.allclose(c2, a2, atol=1e-5)


def plain_memory(mem: NeuralMemory, x, valid, w1, w2, s1, s2):
    """One sequence, one memory chunk at a time, gradients by autograd, gates averaged over real slots."""
    C, d = mem.chunk, mem.q.out_features
    q = torch.nn.functional.normalize(mem.q(x), dim=-1, eps=1e-12)
    k = torch.nn.functional.normalize(mem.k(x), dim=-1, eps=1e-12)
    v = torch.nn.functional.normalize(mem.v(x), dim=-1, eps=1e-12)
    g = torch.sigmoid(mem.gates(x))
    outs = []
    for c in range(x.shape[0] // C):
        idx = range(c * C, (c + 1) * C)
        outs += [q[t] + torch.nn.functional.silu(q[t] @ w1) @ w2 for t in idx]
        real = [t for t in idx if valid[t] > 0]
        if not real:
            continue
        W1, W2 = w1.clone().requires_grad_(True), w2.clone().requires_grad_(True)
        loss = sum(g[t, 0] * mem.lr_max * ((k[t] + torch.nn.functional.silu(k[t] @ W1) @ W2 - v[t]) ** 2).sum() / d
                   for t in real)
        g1, g2 = torch.autograd.grad(loss, (W1, W2))
        eta = ETA_MAX * sum(g[t, 1] for t in real) / len(real)
        alpha = ALPHA_MIN + (1 - ALPHA_MIN) * sum(g[t, 2] for t in real) / len(real)
        g1, g2 = clipped(g1, GRAD_MAX), clipped(g2, GRAD_MAX)
        s1, s2 = clipped(eta * s1 - g1, MOMENTUM_MAX), clipped(eta * s2 - g2, MOMENTUM_MAX)
        w1, w2 = clipped((1 - alpha) * w1 + s1, WEIGHT_MAX), clipped((1 - alpha) * w2 + s2, WEIGHT_MAX)
    return mem.out(torch.stack(outs)), w1, w2, s1, s2


@torch.no_grad()
def test_chunked_memory_with_carried_state_matches_a_plain_loop_over_the_whole_stream():
    torch.manual_seed(1)
    cfg = preset("tiny")
    mem = NeuralMemory(cfg)
    B, calls, slots = 2, 3, 16  # three calls of 16 slots: 6 memory chunks in all
    x = torch.randn(B, calls * slots, cfg.global_dim)
    valid = torch.ones(B, calls * slots)
    valid[0, 12:16] = 0  # an end-of-chunk gap, as patch slots have
    valid[1, 24:32] = 0  # a whole memory chunk without a real patch
    w1 = mem.w1_init.expand(B, -1, -1).clone()
    w2 = torch.randn(B, cfg.mem_hidden, cfg.mem_dim) * 0.1
    s1, s2 = torch.zeros_like(w1), torch.zeros_like(w2)
    state, ys = (w1, w2, s1, s2), []
    for c in range(calls):
        sl = slice(c * slots, (c + 1) * slots)
        y, *state = mem(x[:, sl], valid[:, sl], *state)
        ys.append(y)
    y = torch.cat(ys, 1)
    for b in range(B):
        with torch.enable_grad():
            ref = plain_memory(mem, x[b], valid[b], w1[b], w2[b], s1[b], s2[b])
        assert torch.allclose(y[b], ref[0], atol=1e-5)
        for got, want in zip(state, ref[1:]):
            assert torch.allclose(got[b], want, atol=1e-5)


def test_clip_norm_caps_each_matrix_and_leaves_small_ones_alone():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 48, 48, generator=g) * torch.tensor([1e-3, 0.1, 10.0, 1e4])[:, None, None]
    y = clip_norm(x, 5.0)
    for xi, yi in zip(x, y):
        assert torch.allclose(yi, clipped(xi, 5.0), rtol=1e-5, atol=1e-9)
    assert torch.equal(clip_norm(torch.zeros(1, 3, 3), 1.0), torch.zeros(1, 3, 3))
    # fp16: the norm of a large matrix overflows a plain sum of squares (1e4^2 * 2304 > 65504); not here
    y16 = clip_norm(x.half(), 5.0)
    assert torch.isfinite(y16).all()
    assert torch.allclose(torch.linalg.matrix_norm(y16.float())[2:], torch.tensor([5.0, 5.0]), rtol=1e-2)


@torch.no_grad()
def test_memory_stays_within_its_bounds_with_its_gates_forced_to_the_extremes():
    """Bounded by construction, not by training: learning rate 1, momentum at its cap, forgetting at its floor,
    inputs far outside anything trained, hundreds of updates."""
    torch.manual_seed(2)
    cfg = preset("tiny")
    mem = NeuralMemory(cfg)
    mem.gates.bias.copy_(torch.tensor([30.0, 30.0, -30.0]))  # theta -> 1, eta -> ETA_MAX, alpha -> ALPHA_MIN
    mem.gates.weight.zero_()
    B = 3
    state = (mem.w1_init.expand(B, -1, -1).clone(), torch.zeros(B, cfg.mem_hidden, cfg.mem_dim),
             torch.zeros(B, cfg.mem_dim, cfg.mem_hidden), torch.zeros(B, cfg.mem_hidden, cfg.mem_dim))
    for step in range(300):
        x = torch.randn(B, cfg.max_patches, cfg.global_dim) * 1e3
        x[1] = x[1, :1]  # one repeated patch state: the same surprise again and again
        _, *state = mem(x, torch.ones(B, cfg.max_patches), *state)
        norms = [torch.linalg.matrix_norm(s).max() for s in state]
        assert norms[0] <= WEIGHT_MAX * 1.0001 and norms[1] <= WEIGHT_MAX * 1.0001, step
        assert norms[2] <= MOMENTUM_MAX * 1.0001 and norms[3] <= MOMENTUM_MAX * 1.0001, step
    assert max(norms[:2]) > 0.5 * WEIGHT_MAX  # the adversary really pushed the weights to the bound
