"""BLT pieces against plain Python loops."""
import torch

from neat.blt import entropy, max_pool, max_pool_scatter, mean_pool, ngram_hashes, patch_assignment, patch_starts
from neat.config import BOI_ID, EOI_ID, FIRST_CODE_ID


def loop_boundaries(H, tokens, prev_token, theta):
    B, T = tokens.shape
    out = torch.zeros(B, T)
    for b in range(B):
        for t in range(T):
            prev = int(prev_token[b]) if t == 0 else int(tokens[b, t - 1])
            high = t > 0 and float(H[b, t - 1]) > theta
            out[b, t] = float(t == 0 or high or int(tokens[b, t]) >= BOI_ID or prev >= BOI_ID)
    return out


def loop_assignment(b, p_max):
    B, T = b.shape
    P = torch.zeros(B, T, p_max)
    for i in range(B):
        pid = -1
        for t in range(T):
            pid += int(b[i, t])
            P[i, t, min(pid, p_max - 1)] = 1
    return P


def test_boundaries_and_assignment_match_a_loop():
    g = torch.Generator().manual_seed(1)
    B, T, V = 3, 40, FIRST_CODE_ID + 16
    tokens = torch.randint(0, 256, (B, T), generator=g, dtype=torch.int32)
    tokens[1, 10:28] = torch.tensor([BOI_ID] + [FIRST_CODE_ID + i for i in range(16)] + [EOI_ID])
    prev = torch.tensor([[5], [EOI_ID], [FIRST_CODE_ID]], dtype=torch.int32)
    logits = torch.randn(B, T, V, generator=g) * 3
    theta = float(entropy(logits).median())
    b = patch_starts(logits, tokens, prev, theta)
    assert torch.equal(b, loop_boundaries(entropy(logits), tokens, prev, theta))
    for p_max in (8, 64):  # 8 forces the clamp: the last slot absorbs the overflow
        P, pid = patch_assignment(b, p_max)
        assert torch.equal(P, loop_assignment(b, p_max))
        assert torch.equal(P.argmax(-1).float(), pid)


def test_pooling_matches_a_loop():
    g = torch.Generator().manual_seed(2)
    B, T, C, Pm = 2, 30, 5, 12
    b = (torch.rand(B, T, generator=g) < 0.3).float()
    b[:, 0] = 1
    P, _ = patch_assignment(b, Pm)
    x = torch.randn(B, T, C, generator=g)
    mean, mx = mean_pool(x, P), max_pool(x, P)
    for i in range(B):
        for p in range(Pm):
            members = [x[i, t] for t in range(T) if P[i, t, p] == 1]
            if members:
                stack = torch.stack(members)
                assert torch.allclose(mean[i, p], stack.mean(0), atol=1e-6)
                assert torch.allclose(mx[i, p], stack.max(0).values, atol=1e-6)
            else:
                assert torch.all(mean[i, p] == 0) and torch.all(mx[i, p] == 0)


def test_training_max_pool_equals_the_static_one_in_values_and_gradients():
    """The scatter form training uses (no (B, T, Pm, C) tensor) is the exported static form, with the same
    gradients, including a clamped last slot and empty slots."""
    g = torch.Generator().manual_seed(4)
    B, T, C = 3, 40, 6
    for p_max in (6, 40):  # 6: the last slot absorbs the overflow; 40: many slots stay empty
        b = (torch.rand(B, T, generator=g) < 0.25).float()
        b[:, 0] = 1
        P, _ = patch_assignment(b, p_max)
        x = torch.randn(B, T, C, generator=g) * 5
        up = torch.randn(B, p_max, C, generator=g)  # a gradient from above
        grads = []
        for pool in (max_pool, max_pool_scatter):
            xi = x.clone().requires_grad_(True)
            out = pool(xi, P)
            (out * up).sum().backward()
            grads.append((out.detach(), xi.grad))
        assert torch.equal(grads[0][0], grads[1][0])
        assert torch.allclose(grads[0][1], grads[1][1])
        assert int((grads[1][1] != 0).sum()) > 0


def plain_hash(seq, n, rows, base=257):
    """Hash of the n tokens ending at every position of a whole stream; before the stream is PAD (256)."""
    padded = [256] * (n - 1) + list(seq)
    out = []
    for t in range(len(seq)):
        h = 0
        for tok in padded[t:t + n]:
            h = (h * base + tok + 1) % rows
        out.append(h)
    return out


def test_ngram_hashes_of_chunks_with_carried_context_equal_the_whole_stream():
    g = torch.Generator().manual_seed(3)
    stream = torch.randint(0, 277, (1, 96), generator=g, dtype=torch.int32)
    context = torch.full((1, 3), 256, dtype=torch.int32)
    for n in (3, 4):
        got = []
        ctx = context
        for c in range(3):  # three chunks of 32, context carried as the model does
            chunk = stream[:, c * 32:(c + 1) * 32]
            got += ngram_hashes(torch.cat([ctx, chunk], 1), n, 2053, 32)[0].tolist()
            ctx = torch.cat([ctx, chunk], 1)[:, -3:]
        assert got == plain_hash(stream[0].tolist(), n, 2053)
    big = torch.full((1, 8), 276, dtype=torch.int32)  # largest ids: no int32 overflow
    assert ngram_hashes(big, 4, 2053, 5).dtype == torch.int32


@torch.no_grad()
def test_window_block_with_a_carried_past_equals_one_pass_over_the_whole_stream():
    """Chunks of T with the last W normalised inputs carried reproduce the same layer run over the whole
    stream with a plain causal window: the first bytes of a chunk see the end of the previous one."""
    from neat.layers import Block, WindowBlock, carried_key_bias, carried_window_bias, causal_window_bias

    torch.manual_seed(0)
    T, W, d, n = 16, 6, 24, 4
    block = WindowBlock(d, 4, rope_len=W + T)
    whole = Block(d, 4, rope_len=n * T)
    whole.load_state_dict(block.state_dict(), strict=False)
    x = torch.randn(2, n * T, d)
    want = whole(x, causal_window_bias(n * T, W))
    past, seen, got = torch.zeros(2, W, d), torch.zeros(2, 1), []
    for c in range(n):
        bias = carried_window_bias(T, W) + carried_key_bias(seen, W, T)
        y, past = block(x[:, c * T:(c + 1) * T], bias, past)
        got.append(y)
        seen = (seen + T).clamp(max=W)
    assert torch.allclose(torch.cat(got, 1), want, atol=1e-5)
