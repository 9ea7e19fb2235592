"""The `mlx` target: foreign modules lowered op by op to MLX, verified by executing the `.mlxfn` program here
(MLX on the CPU), then run through `runtimes.load(backend="mlx")`; a multi-entry-point model decodes by steps
through it; an op the table lacks is refused naming the op and the line that uses it."""
import numpy as np
import pytest
import torch

import exporters
from exporters.build import export_bundle
from exporters.errors import ConversionError
from exporters.registry import TARGETS
from foreign import CASES
from runtimes import load
from runtimes.bundle import read_manifest

pytestmark = pytest.mark.skipif(not TARGETS["mlx"].is_available()[0],
                                reason=f"mlx: {TARGETS['mlx'].is_available()[1]}")
CASE = {c.name: c for c in CASES}


def _bundle(tmp_path, name: str, precision: str = "fp32"):
    case = CASE[name]
    model = case.make().eval()
    spec = exporters.describe(model, case.inputs(), name=name, **case.options)
    (outcome,) = export_bundle(spec, ["mlx"], tmp_path / name, precision)
    return case, model, spec, outcome, tmp_path / name


@pytest.mark.parametrize("name", ["cond", "running_mean_int_state", "erfinv"])
def test_foreign_module_verifies_and_runs_through_the_mlx_backend(tmp_path, name):
    case, model, spec, outcome, bundle = _bundle(tmp_path, name)
    assert outcome.verdict == "passed", outcome.message
    art = read_manifest(bundle).artifacts["mlx-fp32"]
    assert art.parity.method.startswith("executed: MLX")
    assert set(art.parity.worst["tensors"]) == {t.name for t in spec.outputs} | {f"new_{t.name}" for t in spec.state}
    session = load(bundle, backend="mlx")
    assert session.backend.target == "mlx"
    inputs, n = case.inputs(), len(spec.inputs)
    with torch.no_grad():
        want = model(*[t.clone() for t in inputs])
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    outs, state = session.call(*[t.numpy() for t in inputs[:n]], state=[t.numpy() for t in inputs[n:]] or None)
    got = outs + state
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)


def test_fp16_keeps_fp32_at_the_inputs_and_outputs(tmp_path):
    *_, outcome, bundle = _bundle(tmp_path, "cond", "fp16")
    assert outcome.verdict == "passed", outcome.message
    (y,), _ = load(bundle, backend="mlx").call(CASE["cond"].inputs()[0].numpy())
    assert y.dtype == np.float32


def test_a_multi_entry_point_model_decodes_by_steps(tmp_path):
    from test_methods import _export

    result = _export(tmp_path, targets=("mlx",))
    assert result.ok, str(result)
    art = read_manifest(result.bundle).artifacts["mlx-fp32"]
    assert set(art.methods) == {"enter", "step"} and art.decode.verdict == "passed"
    assert load(result.bundle, backend="mlx").decoding == "step"


class Sorts(torch.nn.Module):
    def forward(self, x):
        return x.sort(-1).values * 2


def test_an_op_without_a_lowering_is_named_with_its_source_line(tmp_path):
    from exporters.capture import Captured

    cap = Captured(exporters.describe(Sorts(), (torch.randn(2, 5),), name="sorts"))
    with pytest.raises(ConversionError, match=r"no lowering for aten\.sort\.\w+ \(at test_mlx\.py:\d+ `return x\.sort"):
        TARGETS["mlx"].export(cap, tmp_path, TARGETS["mlx"].Settings())


class TwoLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down, self.odd = torch.nn.Linear(64, 96), torch.nn.Linear(96, 32), torch.nn.Linear(32, 8)

    def forward(self, x):
        return self.odd(self.down(torch.relu(self.up(x))))


def test_int8_quantizes_linear_weights_through_mx_quantize(tmp_path):
    import mlx.core as mx

    from exporters.capture import Captured
    from exporters.mlx import _Lowering

    torch.manual_seed(0)
    model, x = TwoLinear().eval(), torch.randn(3, 64)
    spec = exporters.describe(model, (x,), name="two_linear")
    lowering = _Lowering(Captured(spec).decomposed("core"), "int8", ())
    assert len(lowering.quant) == 3 and {q[3] for q in lowering.quant.values()} == {64, 32}
    (y,) = lowering(mx.array(x.numpy()))
    with torch.no_grad():
        want = model(x).numpy()
    err = np.abs(np.array(y) - want).max()
    assert y.dtype == mx.float32 and 1e-6 < err < 0.05 * np.abs(want).max()  # quantized: near, not equal
    (outcome,) = export_bundle(spec, ["mlx"], tmp_path / "b", "int8")
    assert outcome.verdict == "passed", outcome.message
    (got,), _ = load(tmp_path / "b", backend="mlx").call(x.numpy())
    np.testing.assert_allclose(got, np.array(y), atol=1e-5)


class MaskedAttention(torch.nn.Module):
    """Attention with an additive -1e4 mask (as NEAT's patch pooling): row 0 is masked whole (an empty slot)."""

    def forward(self, q, k, keep):
        scores = (q[:, None] @ k.transpose(1, 2))[:, 0] + (keep - 1.0) * 1.0e4  # (B, K); fp16's spacing at 1e4 is 8
        return torch.softmax(scores, dim=-1)


def test_fp16_keeps_softmax_logits_fp32_so_a_row_masked_whole_keeps_its_scores():
    import mlx.core as mx

    from exporters.capture import Captured
    from exporters.mlx import _Lowering

    torch.manual_seed(0)
    q, k, keep = torch.randn(3, 8), torch.randn(3, 6, 8), torch.ones(3, 6)
    keep[0] = 0.0
    spec = exporters.describe(MaskedAttention(), (q, k, keep), name="masked_attention")
    lowering = _Lowering(Captured(spec).decomposed("core"), "fp16", ())
    (y,) = lowering(*(mx.array(t.numpy()) for t in (q, k, keep)))
    want = torch.softmax((q[:, None] @ k.transpose(1, 2))[:, 0], dim=-1).numpy()  # the masked row: the softmax of its scores, as fp32 gives
    np.testing.assert_allclose(np.array(y), want, atol=5e-3)


def test_fp16_stores_weights_once_in_half_precision(tmp_path):
    import exporters.mlx as target
    from exporters.capture import Captured

    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256)).eval()
    spec = exporters.describe(model, (torch.randn(2, 256),), name="mlp", batch=(1, 3))
    cap, size = Captured(spec), {}
    for precision in ("fp32", "fp16"):
        (tmp_path / precision).mkdir()
        target.export(cap, tmp_path / precision, target.Settings(precision=precision))
        size[precision] = (tmp_path / precision / "model.mlxfn").stat().st_size
    assert size["fp32"] > 4 * 256 * 256 * 2  # every weight once, in fp32, across the three batch traces
    assert size["fp16"] < 0.6 * size["fp32"]  # fp16 constants, not fp32 ones cast inside the program
