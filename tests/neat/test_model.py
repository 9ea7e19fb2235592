"""The whole model: export, chunked streaming with carried state, batch independence, the expert mix."""
import pytest
import torch

from neat import STATE_NAMES, NeatModel, preset
from neat.model import count_parameters


def test_tiny_preset_is_at_most_3m_parameters():
    n = count_parameters(NeatModel(preset("tiny")).factor_svf())
    assert 1_000_000 < n <= 3_000_000


def test_forward_signature_and_state_spec(random_model):
    cfg = random_model.cfg
    tokens, *state = random_model.example_inputs(2)
    assert tokens.dtype == torch.int32 and tokens.shape == (2, cfg.chunk_len)
    out = random_model(tokens, *state)
    assert out[0].shape == (2, cfg.chunk_len, cfg.vocab_size)
    assert len(out) == 1 + len(STATE_NAMES)
    for spec, s_in, s_out in zip(random_model.state_spec(), state, out[1:]):
        assert s_in.shape == s_out.shape == (2, *spec.shape), spec.name
        assert s_in.dtype == s_out.dtype == spec.dtype, spec.name


def test_strict_export_matches_eager(random_model):
    inputs = random_model.example_inputs(2)
    ep = torch.export.export(random_model, inputs, strict=True)
    with torch.no_grad():
        want = random_model(*inputs)
        got = ep.module()(*inputs)
    for w, g in zip(want, got):
        assert (w.double() - g.double()).abs().max() <= 1e-5


def stream(model, tokens, state=None):
    outs = list(model.forward_stream(tokens, state))
    return torch.cat([o[0] for o in outs], 1), outs[-1][1]


@torch.no_grad()
def test_stream_resumed_from_its_state_equals_one_pass(random_model):
    T = random_model.cfg.chunk_len
    tokens = torch.randint(0, 256, (2, 6 * T), generator=torch.Generator().manual_seed(4), dtype=torch.int32)
    whole, final = stream(random_model, tokens)
    first, mid = stream(random_model, tokens[:, : 2 * T])
    rest, final2 = stream(random_model, tokens[:, 2 * T :], mid)
    assert torch.equal(torch.cat([first, rest], 1), whole)
    for a, b in zip(final, final2):
        assert torch.equal(a, b)
    # the carried state really carries context: from a fresh state the same chunk gives other logits
    fresh, _ = stream(random_model, tokens[:, 2 * T :])
    assert (fresh[:, :T] - rest[:, :T]).abs().max() > 1e-3


@torch.no_grad()
def test_memory_use_is_constant_in_input_length(random_model):
    T = random_model.cfg.chunk_len
    tokens = torch.randint(0, 256, (1, 16 * T), generator=torch.Generator().manual_seed(5), dtype=torch.int32)
    sizes = [sum(s.numel() * s.element_size() for s in state) for _, state in random_model.forward_stream(tokens)]
    assert len(set(sizes)) == 1  # the state is all that crosses chunks, and its size never changes
    gen = random_model.forward_stream(tokens)
    first = next(gen)
    assert first[0].shape[1] == T  # one chunk at a time: nothing about later chunks is computed up front


@torch.no_grad()
def test_rows_of_a_batch_are_independent(random_model):
    T = random_model.cfg.chunk_len
    g = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, 256, (3, 2 * T), generator=g, dtype=torch.int32)
    batch, _ = stream(random_model, tokens)
    single, _ = stream(random_model, tokens[1:2])
    assert torch.allclose(batch[1:2], single, atol=1e-5)


@torch.no_grad()
def test_caller_given_mix_replaces_dispatch(random_model):
    tokens, *state = random_model.example_inputs(1)
    K = random_model.cfg.n_experts
    own = random_model.forward_detailed(tokens, state)
    mix = torch.softmax(own["dispatch_logits"], -1)
    base = random_model(tokens, *state)[0]
    per_expert = [random_model(tokens, *state, alpha=torch.eye(K)[k : k + 1])[0] for k in range(K)]
    assert all((p - base).abs().max() > 1e-4 for p in per_expert)  # experts change the output
    assert (per_expert[0] - per_expert[1]).abs().max() > 1e-4
    assert torch.allclose(mix.sum(-1), torch.ones_like(mix[..., 0]))


def test_stream_rejects_a_partial_chunk(random_model):
    with pytest.raises(ValueError, match="multiple of the chunk length"):
        list(random_model.forward_stream(torch.zeros(1, 100, dtype=torch.int32)))


@torch.no_grad()
def test_forward_is_deterministic(random_model):
    inputs = random_model.example_inputs(2)
    a, b = random_model(*inputs), random_model(*inputs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
