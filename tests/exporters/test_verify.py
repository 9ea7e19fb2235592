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


# ----- planted faults on foreign models: every output and every state tensor is gated -------------------
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import exporters  # noqa: E402
from foreign import GRUStep, DictOutputs, InPlaceInput, Int64Argmax, RunningMean  # noqa: E402


def planted(spec, fault):
    """The eager reference with `fault(call number, outputs)` applied to what it returns."""
    reference, calls = reference_runner(spec), [0]

    def run(*arrays):
        calls[0] += 1
        return fault(calls[0], [np.array(o, copy=True) for o in reference(*arrays)])

    return run


def shifted(index, amount=1.0):
    def fault(call, outs):
        outs[index] = outs[index] + amount
        return outs

    return fault


@pytest.fixture(scope="module")
def gru():
    return exporters.describe(GRUStep(), (torch.randn(2, 4, 5), torch.zeros(2, 7)), state=["h"], batch=(1, 3))


def test_a_shifted_second_output_fails():
    spec = exporters.describe(DictOutputs(), (torch.randn(2, 6),))
    assert [t.name for t in spec.outputs] == ["mu", "stats_0", "stats_1"]
    parity = verify(spec, planted(spec, shifted(1)), "fp32", "planted")
    assert parity.verdict == "failed" and "stats_0: error" in parity.notes and "mu:" not in parity.notes


def test_a_shifted_state_fails(gru):
    parity = verify(gru, planted(gru, shifted(1)), "fp32", "planted")
    assert parity.verdict == "failed" and "new_h: error" in parity.notes  # (and the outputs after it)


def test_a_state_that_drifts_after_20_chunks_is_caught_by_the_long_stream(gru):
    def drift(call, outs):
        if call > 20:
            outs[1] = outs[1] * 1.001 + 1e-3
        return outs

    parity = verify(gru, planted(gru, drift), "fp32", "planted")
    assert parity.verdict == "failed" and "new_h" in parity.notes
    long = [c for c in parity.cases if c["chunks"] == 64]
    assert long and long[0]["tensors"]["new_h"]["error"] > 1e-4
    short = [c for c in parity.cases if c["chunks"] < 64]
    assert all(c["tensors"]["new_h"]["error"] == 0.0 for c in short)  # only the long stream sees it


class DivergesAfter20(torch.nn.Module):
    """The state counts chunks; from chunk 20 the output is inf (the reference itself breaks)."""

    def forward(self, x, n):
        n = n + 1.0
        return x * torch.where(n > 20, torch.full_like(n, float("inf")), torch.ones_like(n)), n


def test_a_reference_that_diverges_after_20_chunks_fails():
    spec = exporters.describe(DivergesAfter20(), (torch.randn(2, 3), torch.zeros(2, 1)), state=["n"])
    parity = verify(spec, reference_runner(spec), "fp32", "eager")
    assert parity.verdict == "failed" and "diverges" in parity.notes


def test_integer_outputs_and_state_must_match_exactly():
    spec = exporters.describe(Int64Argmax(), (torch.randint(0, 30, (2, 7)),))
    parity = verify(spec, planted(spec, shifted(0, 1)), "fp32", "planted")
    assert parity.verdict == "failed" and "output_0:" in parity.notes and "differ" in parity.notes
    spec = exporters.describe(RunningMean(), (torch.randn(2, 3, 4), torch.zeros(2, 4),
                                              torch.zeros(2, 1, dtype=torch.int64)), state=["total", "count"])
    parity = verify(spec, planted(spec, shifted(2, 1)), "fp32", "planted")
    assert parity.verdict == "failed" and "new_count" in parity.notes


def test_a_stateless_model_verifies_and_each_side_gets_its_own_inputs():
    spec = exporters.describe(InPlaceInput(), (torch.randn(2, 9),))
    parity = verify(spec, reference_runner(spec), "fp32", "eager")  # eager against eager: must pass
    assert parity.verdict == "passed", parity.notes
    assert not any("long stream" in c["name"] for c in parity.cases)  # no state: nothing to carry


def test_an_artifact_that_crashes_fails_with_the_reason(gru):
    def crash(*arrays):
        raise RuntimeError("kernel not found")

    parity = verify(gru, crash, "fp32", "planted")
    assert parity.verdict == "failed" and "RuntimeError: kernel not found" in parity.notes


def test_argmax_flips_are_excused_only_on_near_ties_within_the_precision():
    from exporters.parity import compare

    ref = np.array([[[1.0, 1.001, 0.0], [5.0, 0.0, 0.0]]])
    tie_flipped = np.array([[[1.001, 1.0, 0.0], [5.0, 0.0, 0.0]]])
    m = compare(ref, tie_flipped, rows=True, tie=2e-2)  # fp16: margins within 2% of the scale may go either way
    assert m["argmax"] == 1.0 and m["ties"] == 1
    assert compare(ref, tie_flipped, rows=True, tie=0.0)["argmax"] == 0.5  # no exemption: counted
    decided_flipped = np.array([[[1.0, 1.001, 0.0], [0.0, 5.0, 0.0]]])
    assert compare(ref, decided_flipped, rows=True, tie=2e-2)["argmax"] == 0.0
