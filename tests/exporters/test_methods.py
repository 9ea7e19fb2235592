"""Entry points besides the chunk forward, on a model the exporters have never seen (not NEAT): a small
recurrent LM that decodes one token per call. Every target builds each method, verification steps through
them against the chunk forward, and a step that drifts late in a stream is caught and never written."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import exporters
from exporters.errors import SpecError
from runtimes.errors import BundleError, InputError

VOCAB, T, H = 16, 8, 12


class RecurrentLM(nn.Module):
    """forward(tokens (B, T), h (B, H)) -> (logits (B, T, V), h): one tanh cell per token."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(VOCAB, H)
        self.cell = nn.Linear(2 * H, H)
        self.head = nn.Linear(H, VOCAB)

    def cell_step(self, token: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.cell(torch.cat([self.emb(token)[:, 0], h], dim=-1)))  # (B, H)

    def forward(self, tokens, h):
        outs = []
        for t in range(T):
            h = self.cell_step(tokens[:, t:t + 1], h)
            outs.append(self.head(h))
        return torch.stack(outs, dim=1), h


class Enter(nn.Module):
    """chunk state h -> step state (h, steps taken)."""

    def forward(self, h):
        return h * 1.0, torch.zeros(h.shape[0], 1)


class Step(nn.Module):
    """token (B, 1), h, n -> (logits (B, 1, V), h, n + 1); with `drift`, a small error from the 20th step."""

    def __init__(self, lm: RecurrentLM, drift: float = 0.0):
        super().__init__()
        self.lm, self.drift = lm, drift

    def forward(self, token, h, n):
        h = self.lm.cell_step(token, h) + self.drift * (n >= 20).to(h.dtype)
        return self.lm.head(h)[:, None], h, n + 1.0


def _data(batch: int, chunks: int):
    g = torch.Generator().manual_seed(batch * 31 + chunks)
    return [(torch.randint(0, VOCAB, (batch, T), generator=g, dtype=torch.int32),) for _ in range(chunks)]


def _step_data(batch: int, calls: int):
    tokens = torch.cat([c[0] for c in _data(batch, -(-calls // T))], dim=1)
    return [(tokens[:, i:i + 1],) for i in range(calls)]


def _export(tmp_path, drift: float = 0.0, targets=("exported", "onnx"), decode=None, precision="fp32"):
    lm = RecurrentLM().eval()
    h0 = torch.zeros(1, H)
    token = torch.zeros(1, 1, dtype=torch.int32)
    methods = {
        "enter": exporters.describe(Enter(), (h0,), name="enter", input_names=["h"], output_names=["step_h", "n"],
                                    batch=(1, 2)),
        "step": exporters.describe(Step(lm, drift), (token,), name="step", state={"h": h0, "n": torch.zeros(1, 1)},
                                   batch=(1, 2), input_names=["token"], output_names=["logits"],
                                   ranges={"token": (0, VOCAB)}, argmax=["logits"], data=_step_data,
                                   long_stream_chunks=4),
    }
    return exporters.export(lm, (torch.zeros(1, T, dtype=torch.int32),), state={"h": h0}, batch=(1, 2),
                            name="recurrent-lm", input_names=["tokens"], output_names=["logits"],
                            ranges={"tokens": (0, VOCAB)}, argmax=["logits"], data=_data,
                            methods=methods, decode=decode or {"enter": "enter", "step": "step"},
                            targets=list(targets), out=tmp_path / "lm", check=False, precision=precision)


def _openvino() -> tuple[str, ...]:
    from exporters import openvino

    return ("openvino",) if openvino.is_available()[0] else ()


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("methods"), targets=("exported", "onnx", *_openvino()))


def test_every_target_builds_and_verifies_each_method(lm_bundle):
    from runtimes.bundle import read_manifest

    assert lm_bundle.ok, str(lm_bundle)
    manifest = read_manifest(lm_bundle.bundle)
    assert set(manifest.signature["methods"]) == {"enter", "step"}
    assert manifest.signature["decode"] == {"enter": "enter", "step": "step"}
    for key in ("exported-fp32", "onnx-fp32", *(f"{t}-fp32" for t in _openvino())):
        art = manifest.artifacts[key]
        assert {m: p.verdict for m, p in art.methods.items()} == {"enter": "passed", "step": "passed"}
        assert art.decode.verdict == "passed" and art.decode.cases[0]["steps"]["full"] == 4 * T
        assert any(f.path.startswith(f"{key}/step/") for f in art.files)  # hashed like the rest


@pytest.mark.parametrize("backend", ["exported", "onnx", "openvino"])
def test_stepping_generates_what_recomputing_generates(lm_bundle, backend):
    from runtimes import load

    if backend == "openvino" and not _openvino():
        pytest.skip('openvino is not installed: pip install "neat-deploy[openvino]"')

    session = load(lm_bundle.bundle, backend=backend)
    assert session.decoding == "step"
    prompt = bytes(range(10)) * 2  # 2 whole chunks and 4 stepped tokens
    stepped = session.generate(prompt, 30, decode="step")
    assert len(stepped) == 30 and stepped == session.generate(prompt, 30, decode="recompute")
    sampled = session.generate(prompt, 30, temperature=0.8, top_k=5, seed=3)
    assert sampled == session.generate(prompt, 30, temperature=0.8, top_k=5, seed=3, decode="recompute")
    # generation keeps a torch backend's step state in torch between steps (no numpy round trip per call)
    state = session.decoder(native=True).enter(session.new_state(1))
    assert all(isinstance(s, np.ndarray) != (backend == "exported") for s in state)


def test_a_step_that_drifts_late_in_a_stream_is_caught_and_not_written(tmp_path):
    # the step module drifts from the chunk forward itself, so the artifact matches its own reference method:
    # only stepping the whole protocol against the chunk forward shows it (from the 20th token on)
    result = _export(tmp_path, drift=1e-3, targets=("exported",))
    (outcome,) = result.outcomes
    assert outcome.verdict == "failed" and outcome.message.startswith("decode: logits: error")
    assert not (result.bundle / "manifest.json").exists()  # the only artifact failed: nothing was written


@pytest.mark.parametrize("decode, words", [
    ({"enter": "enter"}, "step are required"),
    ({"enter": "enter", "step": "stepp"}, "not among the model's methods"),
    ({"enter": "enter", "step": "step", "speed": "step"}, "unknown decode role"),
    ({"enter": "enter", "step": "step", "light_step": "step"}, "go together"),
])
def test_a_bad_decode_description_is_refused_before_anything_is_built(tmp_path, decode, words):
    with pytest.raises(SpecError, match=words):
        _export(tmp_path, decode=decode)
    assert not (tmp_path / "lm").exists()


@pytest.mark.parametrize("edit, words", [
    (lambda m: m["signature"]["methods"].update({"../../x": m["signature"]["methods"]["step"]}), "plain identifier"),
    (lambda m: m["signature"]["decode"].update(step="missing"), "not among the model's methods"),
    (lambda m: m["artifacts"]["onnx-fp32"]["methods"].update(other=m["artifacts"]["onnx-fp32"]["parity"]),
     "methods must map method names"),
    (lambda m: m["artifacts"]["onnx-fp32"]["methods"]["step"].update(verdict="trust me"), "verdict must be one of"),
])
def test_a_hostile_manifest_naming_methods_is_refused(lm_bundle, tmp_path, edit, words):
    from runtimes.manifest import parse_manifest

    raw = json.loads((lm_bundle.bundle / "manifest.json").read_text())
    edit(raw)
    with pytest.raises(BundleError, match=words):
        parse_manifest(json.dumps(raw))


def test_asking_to_step_an_artifact_without_methods_says_what_to_do(tmp_path):
    from runtimes import load

    result = exporters.export(RecurrentLM().eval(), (torch.zeros(1, T, dtype=torch.int32),),
                              state={"h": torch.zeros(1, H)}, targets=["onnx"], out=tmp_path / "plain")
    session = load(result.bundle, backend="onnx")
    assert session.decoding == "recompute" and session.methods == []
    with pytest.raises(InputError, match="carries no decode step"):
        session.generate(bytes([1, 2, 3]), 5, decode="step")
    assert len(session.generate(bytes([1, 2, 3]), 5)) == 5


def test_decoder_steps_the_light_form_where_the_gate_allows():
    from runtimes.decode import Decoder

    calls = []

    def call(name, arrays):
        calls.append(name)
        if name == "gate":
            return [np.array([[arrays[0][0, 0] % 2 == 0]])]
        if name == "enter":
            return [arrays[0] + 0]
        return [np.full((1, 1, 3), float(arrays[0][0, 0])), arrays[1] + 1]

    dec = Decoder(call, {"enter": "enter", "step": "full", "light_step": "light", "gate": "gate"},
                  {"full": 1, "light": 1})
    scores = dec.scores(np.array([[1, 2, 3, 4]]), [np.zeros((1, 1))])
    assert scores.shape == (1, 4, 3) and scores[0, :, 0].tolist() == [1, 2, 3, 4]
    assert [c for c in calls if c != "gate"] == ["enter", "light", "full", "light", "full"]
    assert (dec.full_steps, dec.light_steps) == (2, 2)


def test_decoder_commits_a_full_step_state_and_enters_the_next_chunk():
    """With a commit role the decoder commits after every `period` steps (enter(commit(state))), never before
    the first step or more often; without the chunk length it is refused."""
    from runtimes.decode import Decoder
    from runtimes.errors import InputError

    calls = []

    def call(name, arrays):
        calls.append(name)
        if name == "enter":
            return [arrays[0] * 0]  # the step count restarts
        if name == "commit":
            return [arrays[0] + 100]
        return [np.full((1, 1, 3), float(arrays[1][0, 0])), arrays[1] + 1]

    roles = {"enter": "enter", "step": "step", "commit": "commit"}
    dec = Decoder(call, roles, {"step": 1}, period=3)
    scores = dec.scores(np.array([[1] * 7]), [np.zeros((1, 1))])
    assert scores[0, :, 0].tolist() == [0, 1, 2, 0, 1, 2, 0] and dec.commits == 2
    assert calls == ["enter", *["step"] * 3, "commit", "enter", *["step"] * 3, "commit", "enter", "step"]
    with pytest.raises(InputError, match="chunk length"):
        Decoder(call, roles, {"step": 1})
