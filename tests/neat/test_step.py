"""The decode step (neat.step): stepping byte by byte reproduces the chunk forward's logits and chunk-end state,
greedy generation by steps equals generation by recomputing the partial chunk, and the step exports strictly."""
import pytest
import torch

from neat.config import PAD_ID
from neat.data import text_stream
from neat.step import STEP_STATE_NAMES, DecodeStep, StepStateError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls on a shared 2-core machine run ~20x slower with a second thread waiting for its core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """fp32 agreement: max error at most 1e-4 of max(1, max|want|)."""
    return (got.double() - want.double()).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())


def steps(step: DecodeStep, tokens: torch.Tensor, state) -> tuple[torch.Tensor, tuple]:
    """Step through tokens (B, N), running the latent layers only where a patch completes (the split path)."""
    logits = []
    for i in range(tokens.shape[1]):
        tok = tokens[:, i : i + 1]
        fn = step if bool(step.needs_patch(tok, *state).any()) else step.byte_step
        out, *state = fn(tok, *state)
        logits.append(out)
    return torch.cat(logits, 1), tuple(state)


def check_stream(model, tokens: torch.Tensor) -> None:
    step, T = DecodeStep(model), model.cfg.chunk_len
    state = step.step_state(tokens.shape[0])
    for c, (want_logits, want_state) in enumerate(model.forward_stream(tokens)):
        got_logits, state = steps(step, tokens[:, c * T : (c + 1) * T], state)
        assert close(got_logits, want_logits), f"logits differ in chunk {c}"
        for name, got, want in zip(model.state_names, step.chunk_state(state), want_state, strict=True):
            assert got.dtype == want.dtype and close(got, want), f"state {name} differs after chunk {c}"


@torch.no_grad()
def test_steps_reproduce_chunks_of_text_and_random_bytes(shipped_model):
    T = shipped_model.cfg.chunk_len
    text = torch.as_tensor(text_stream("prose", held_out=True).tokens[: 16 * T], dtype=torch.int32)
    noise = torch.randint(0, 256, (16 * T,), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    check_stream(shipped_model, torch.stack([text, noise]))


@torch.no_grad()
def test_steps_reproduce_chunks_with_image_tokens_and_patch_overflow(random_model):
    """Any token of the vocabulary: image spans opened and closed at random, and (this random entropy model is
    uncertain everywhere) a boundary at every byte, so every chunk overflows its patch slots."""
    cfg = random_model.cfg
    tokens = torch.randint(0, cfg.vocab_size, (2, 4 * cfg.chunk_len), generator=torch.Generator().manual_seed(1),
                           dtype=torch.int32)
    check_stream(random_model, tokens)


@pytest.mark.parametrize("changes", [{"memory": False}, {"experts": ()}, {"memory": False, "experts": ()}],
                         ids=["no-memory", "no-experts", "neither"])
@torch.no_grad()
def test_steps_reproduce_chunks_without_memory_or_experts(changes):
    """The step state follows the config (no mem_* without memory, no disp without experts); a nano model of
    each (micro over 32-byte chunks, 8 patch slots), any token of the vocabulary, a boundary at most bytes."""
    from neat import NeatModel, preset

    torch.manual_seed(0)
    cfg = preset("micro").replace(entropy_threshold=5.2, chunk_len=32, max_patches=8, local_window=16,
                                  persistent_tokens=1, **changes)
    model = NeatModel(cfg)
    model = (model.factor_svf() if cfg.experts else model).eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 3 * cfg.chunk_len), generator=torch.Generator().manual_seed(1),
                           dtype=torch.int32)
    check_stream(model, tokens)


def recompute_greedy(model, prompt: torch.Tensor, n: int) -> list[int]:
    """runtimes.generate.stream's way: a chunk forward over the padded partial chunk for every byte."""
    T = model.cfg.chunk_len
    state, buf = model.init_state(1), prompt.tolist()
    while len(buf) >= T:
        logits, *state = model(torch.tensor([buf[:T]], dtype=torch.int32), *state)
        last, buf = logits[0, -1], buf[T:]
    out = []
    for _ in range(n):
        if buf:
            logits = model(torch.tensor([buf + [PAD_ID] * (T - len(buf))], dtype=torch.int32), *state)[0]
            last = logits[0, len(buf) - 1]
        buf.append(int(last.argmax()))
        out.append(buf[-1])
        if len(buf) == T:  # the chunk is full: commit it
            logits, *state = model(torch.tensor([buf], dtype=torch.int32), *state)
            last, buf = logits[0, -1], []
    return out


def step_greedy(model, prompt: torch.Tensor, n: int) -> list[int]:
    """Prefill whole chunks with the chunk forward, then one masked-graph step per byte."""
    T, step = model.cfg.chunk_len, DecodeStep(model)
    whole = len(prompt) // T * T
    state = model.init_state(1)
    for c in range(0, whole, T):
        _, *state = model(prompt[None, c : c + T], *state)
    state = step.from_chunk_state(state)
    for tok in prompt[whole:].tolist():
        logits, *state = step(torch.tensor([[tok]], dtype=torch.int32), *state)
    out = []
    for _ in range(n):
        out.append(int(logits[0, -1].argmax()))
        logits, *state = step(torch.tensor([[out[-1]]], dtype=torch.int32), *state)
    return out


@torch.no_grad()
def test_greedy_generation_by_steps_equals_recompute(shipped_model):
    prompt = torch.as_tensor(text_stream("prose", held_out=True).tokens[5000:5200], dtype=torch.int32)
    assert step_greedy(shipped_model, prompt, 256) == recompute_greedy(shipped_model, prompt, 256)


class EntryPoint(torch.nn.Module):
    """One of DecodeStep's entry points as a module's forward, for torch.export."""

    def __init__(self, step: DecodeStep, name: str):
        super().__init__()
        self.step, self.name = step, name

    def forward(self, token, *state):
        out = getattr(self.step, self.name)(token, *state)
        return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("entry", ["forward", "byte_step", "needs_patch"])
def test_step_entry_points_export_strictly_and_match_eager(random_model, entry):
    step = DecodeStep(random_model)
    module = EntryPoint(step, entry)
    tokens = torch.randint(0, 256, (2, 3), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    state = step.step_state(2)
    ep = torch.export.export(module, (tokens[:, :1], *state), strict=True)
    with torch.no_grad():
        for i in range(tokens.shape[1]):
            want = module(tokens[:, i : i + 1], *state)
            got = ep.module()(tokens[:, i : i + 1], *state)
            for w, g in zip(want, got):
                assert w.dtype == g.dtype and close(g.double(), w.double())
            state = step(tokens[:, i : i + 1], *state)[1:]


def test_step_states_are_contiguous(random_model):
    """Exports specialise to their example inputs' strides and runtimes pass contiguous arrays: a strided state
    (a transposed per-head view) would be read wrongly by an AOTInductor package and refused by Core ML."""
    step = DecodeStep(random_model)
    state = step.step_state(2)
    for tok in (0, 1):
        for name, s in zip(STEP_STATE_NAMES, state):
            assert s.is_contiguous(), f"{name} is not contiguous"
        with torch.no_grad():
            _, *state = step(torch.full((2, 1), tok, dtype=torch.int32), *state)


def test_chunk_state_of_a_partial_chunk_is_refused(random_model):
    step = DecodeStep(random_model)
    _, *state = step(torch.zeros((1, 1), dtype=torch.int32), *step.step_state(1))
    with pytest.raises(StepStateError, match="full chunk"):
        step.chunk_state(state)


def test_a_plain_baseline_has_no_decode_step():
    from neat.plain import PlainConfig, PlainModel

    with pytest.raises(StepStateError, match="NeatModel"):
        DecodeStep(PlainModel(PlainConfig()))


@torch.no_grad()
def test_a_step_projects_one_row_per_attention_layer(shipped_model):
    """Keys and values are carried in the state (neat.step_cache): a light step is well under the 11.3 MFLOP
    it took when every step re-projected its cached inputs, the full step (7.3) under the 15.1 it took while a
    patch's pooling re-projected the keys/values of all T bytes."""
    from torch.utils.flop_counter import FlopCounterMode

    step = DecodeStep(shipped_model)
    state = step.step_state(1)
    _, *state = step(torch.full((1, 1), 65, dtype=torch.int32), *state)
    for name, most in (("byte_step", 2e6), ("forward", 10e6)):
        with FlopCounterMode(display=False) as counter:
            getattr(step, name)(torch.full((1, 1), 66, dtype=torch.int32), *state)
        assert counter.get_total_flops() < most, f"{name}: {counter.get_total_flops() / 1e6:.1f} MFLOP"
