"""Bounded by construction: hundreds of chunks of adversarial input, in fp32 and fp16, keep every logit finite
and every float state within `NeatModel.state_bounds()`, for the shipped weights and for weights whose memory
gates are forced to their extremes."""
import pytest
import torch

from neat.config import BOI_ID, EOI_ID, FIRST_CODE_ID

pytestmark = pytest.mark.slow  # long adversarial streams through the model

CHUNKS = 256
MEMORY = ("mem_w1", "mem_w2", "mem_s1", "mem_s2")


def adversarial_streams(T: int, chunks: int, n_codes: int) -> torch.Tensor:
    """(4, chunks*T): random bytes, one byte repeated, image codes without end (one BOI, then codes only),
    and back-to-back images with random codes."""
    g = torch.Generator().manual_seed(7)
    n = chunks * T
    rand = torch.randint(0, 256, (n,), generator=g)
    same = torch.full((n,), ord("a"))
    endless = FIRST_CODE_ID + torch.randint(0, n_codes, (n,), generator=g)
    endless[0] = BOI_ID
    span = 16 + 2
    images = FIRST_CODE_ID + torch.randint(0, n_codes, (n,), generator=g)
    images[::span], images[span - 1::span] = BOI_ID, EOI_ID
    return torch.stack([rand, same, endless, images]).to(torch.int32)


def extreme_gates(model):
    """A copy whose Titans gates sit at learning rate 1, maximal momentum and minimal forgetting."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for layer in m.layers:
            layer.memory.gates.weight.zero_()
            layer.memory.gates.bias.copy_(torch.tensor([30.0, 30.0, -30.0]))
    return m


def run_bounded(model, dtype, chunks=CHUNKS):
    model = model.to(dtype)
    T, bounds = model.cfg.chunk_len, model.state_bounds()
    tokens = adversarial_streams(T, chunks, model.cfg.n_codes)
    state = [s.to(dtype) if s.is_floating_point() else s for s in model.init_state(tokens.shape[0])]
    worst = {}
    with torch.no_grad():
        for c in range(chunks):
            logits, *state = model(tokens[:, c * T:(c + 1) * T], *state)
            assert torch.isfinite(logits).all(), f"non-finite logits at chunk {c}"
            for name, s in zip(model.state_names, state, strict=True):  # the model's own (lean: fewer)
                if name in bounds:  # memory matrices: Frobenius norm (their documented bound); others: |entry|
                    s = s.float()
                    top = float(torch.linalg.matrix_norm(s).max() if name in MEMORY else s.abs().max())
                    assert top <= bounds[name] * 1.01, f"{name} reached {top} > bound {bounds[name]} at chunk {c}"
                    worst[name] = max(worst.get(name, 0.0), top / bounds[name])
    return worst


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_adversarial_streams_stay_finite_and_bounded_with_extreme_gates(random_model, dtype):
    worst = run_bounded(extreme_gates(random_model), dtype)
    assert max(worst["mem_w1"], worst["mem_w2"]) > 0.5  # the memory really was driven towards its bound


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_adversarial_streams_stay_finite_and_bounded_with_the_shipped_weights(shipped_model, dtype):
    import copy

    worst = run_bounded(copy.deepcopy(shipped_model), dtype)
    assert set(worst) == set(shipped_model.state_bounds())  # every bounded state of this model was checked
