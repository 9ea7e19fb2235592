"""The one-call API: exporters.describe / exporters.export on modules nobody here wrote for NEAT."""
import warnings

import numpy as np
import pytest
import torch

import exporters
from exporters.errors import SpecError
from foreign import GPT, DictOutputs, GRUStep, IndexSelect, ScalarLike


def test_describe_works_out_names_shapes_dtypes_and_the_batch():
    spec = exporters.describe(GPT(), (torch.randint(0, 64, (2, 16)),), batch=(1, 4))
    assert [(t.name, t.dtype, t.shape, t.batched) for t in spec.inputs] == [("idx", "int64", (16,), True)]
    assert [(t.name, t.dtype, t.shape, t.batched) for t in spec.outputs] == [("output", "float32", (16, 64), True)]
    assert spec.inputs[0].range is None  # not enforced unless given; random cases keep to the example's span
    random = spec.random_inputs(4, seed=3)[0]
    assert random.dtype == torch.int64 and spec.examples[0].min() <= random.min() <= random.max() <= spec.examples[0].max()
    assert spec.state == () and spec.long_stream_chunks == 0 and spec.batch == (1, 4)

    spec = exporters.describe(ScalarLike(), (torch.randn(2, 3, 4),), batch=(1, 3))
    assert [(t.name, t.shape, t.batched) for t in spec.outputs] == [("output_0", (), True), ("output_1", (), False)]
    spec = exporters.describe(DictOutputs(), (torch.randn(2, 6),))
    assert [t.name for t in spec.outputs] == ["mu", "stats_0", "stats_1"]
    spec = exporters.describe(IndexSelect(), (torch.randn(3, 10), torch.tensor([0, 7, 3])), unbatched=["cols"])
    assert [(t.name, t.batched) for t in spec.inputs] == [("x", True), ("cols", False)]


def test_state_by_names_or_values_with_its_long_stream():
    spec = exporters.describe(GRUStep(), (torch.randn(2, 4, 5), torch.zeros(2, 7)), state=["h"], batch=(1, 3))
    assert [t.name for t in spec.state] == ["h"] and [t.name for t in spec.outputs] == ["output"]
    assert spec.long_stream_chunks == 64
    assert spec.init_state(3)[0].shape == (3, 7)
    same = exporters.describe(GRUStep(), (torch.randn(2, 4, 5),), state={"h": torch.zeros(2, 7)}, batch=(1, 3))
    assert same.signature() == spec.signature()


def test_the_users_module_is_left_as_it_was():
    model = GPT().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exporters.describe(model, (torch.randint(0, 64, (2, 16)),))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("call, words", [
    (lambda: exporters.describe(GPT(), (3,)), ["no example input is a tensor", "'idx': 3"]),
    (lambda: exporters.describe(GPT(), (object(),)), ["'idx' is a object", "tensor"]),
    (lambda: exporters.describe(GPT(), (torch.randint(0, 64, (2, 16)).to(torch.complex64),)), ["complex64", "cast"]),
    (lambda: exporters.describe(IndexSelect(), (torch.randn(2, 10), torch.tensor([0, 7, 3]))), ["'cols'", "unbatched"]),
    (lambda: exporters.describe(GRUStep(), (torch.randn(2, 4, 5), torch.zeros(2, 6)), state=["h"]), ["fails"]),
    (lambda: exporters.describe(DictOutputs(), (torch.randn(2, 6),), output_names=["a"]), ["3 output"]),
    (lambda: exporters.describe(GPT(), (torch.randint(0, 64, (2, 16)),), ranges={"tokens": (0, 4)}), ["'tokens'", "idx"]),
    (lambda: exporters.describe(GPT(), (torch.randint(0, 64, (2, 16)),), batch=(3, 2)), ["batch=(3, 2)", "batch bounds", "batch=(2, 3)"]),
])
def test_bad_descriptions_are_typed_errors_that_say_what_to_do(call, words):
    with pytest.raises(SpecError) as info:
        call()
    for w in words:
        assert w in str(info.value)


def test_new_state_must_match_the_state():
    class Grows(torch.nn.Module):
        def forward(self, x, h):
            return x, torch.cat([h, h], 1)

    with pytest.raises(SpecError, match="state 'h'.*new state"):
        exporters.describe(Grows(), (torch.randn(2, 3), torch.zeros(2, 4)), state=["h"])

    class Forgets(torch.nn.Module):
        def forward(self, x, h, c):
            return x + h

    with pytest.raises(SpecError, match="returned 1 tensor.*2 state"):
        exporters.describe(Forgets(), (torch.randn(2, 4), torch.zeros(2, 4), torch.zeros(2, 4)), state=["h", "c"])


def test_export_in_one_call_and_run_the_bundle(tmp_path, capsys):
    """Also: torch's deprecation noise is filtered where the exporters call torch (issue 32), and the steps
    `neat export` reports (neat.progress.timed_step) each print a start and an end line to a non-terminal."""
    from neat.progress import timed_step
    from runtimes import load

    model, x = GRUStep(), torch.randn(2, 4, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = exporters.export(model, (x, torch.zeros(2, 7)), state=["h"], batch=(1, 3),
                                  targets=["exported", "onnx"], out=tmp_path / "gru", step=timed_step)
    noise = [f"{w.category.__name__}: {w.message} ({w.filename})" for w in caught
             if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert noise == []
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "start  capture grustep with torch.export"
    for label in ("exported-fp32: build", "onnx-fp32: build", "onnx-fp32: verify against the reference"):
        assert f"start  {label}" in err and any(line.startswith(f"done   {label} (") for line in err), err
    assert result.ok and {o.key: o.verdict for o in result.outcomes} == {"exported-fp32": "passed",
                                                                         "onnx-fp32": "passed"}
    session = load(tmp_path / "gru", backend="onnx")
    (y,), (h,) = session.call(x.numpy())
    y2, (h2,) = session.call(x.numpy(), state=[h])
    with torch.no_grad():
        ref_y, ref_h = model(x, torch.zeros(2, 7))
        ref_y2, ref_h2 = model(x, ref_h)
    np.testing.assert_allclose(y, ref_y.numpy(), atol=1e-5)
    np.testing.assert_allclose(h2, ref_h2.numpy(), atol=1e-5)


def test_a_target_that_fails_raises_after_writing_the_others(tmp_path, monkeypatch):
    from exporters import onnx as onnx_target
    from runtimes.bundle import read_manifest

    real = onnx_target.runner

    def wrong(artifact_dir, requirements):
        ex = real(artifact_dir, requirements)
        run = ex.run
        ex.run = lambda *a: [o + 0.5 if i == 1 else o for i, o in enumerate(run(*a))]
        return ex

    monkeypatch.setattr(onnx_target, "runner", wrong)
    with pytest.raises(exporters.ExportFailed) as info:
        exporters.export(DictOutputs(), (torch.randn(2, 6),), targets=["exported", "onnx"], out=tmp_path / "b")
    assert "onnx-fp32: failed: stats_0: error" in str(info.value)
    assert list(read_manifest(tmp_path / "b").artifacts) == ["exported-fp32"]
