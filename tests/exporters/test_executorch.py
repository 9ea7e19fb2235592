"""The executorch target and backend: the toy bundle (state carried through runtimes.load), a foreign module
with integer state, the small LM whose decode methods live in one .pte (stepping generates what recomputing
generates), an op exir refuses as a typed error, and the backend's input checks and thread count."""
import json
import shutil

import numpy as np
import pytest

from exporters import executorch as target
from runtimes.errors import BackendUnavailable, InputError
from toy import assert_carries_state_like

pytestmark = pytest.mark.skipif(not target.is_available()[0], reason=target.is_available()[1])


def _backend_load(path, requirements, threads=1):
    from runtimes import backends
    from runtimes.profile import detect

    return backends.get("executorch").load(path, requirements, detect(), threads=threads)


def test_toy_runs_through_runtimes_load_with_its_state(toy_bundle):
    bundle, outcomes = toy_bundle
    assert outcomes["executorch"].verdict == "passed", outcomes["executorch"].message
    assert_carries_state_like(bundle, "executorch", "exported")


def test_the_backend_checks_inputs_against_the_method_as_input_errors_not_crashes(toy_bundle, tmp_path):
    from runtimes.bundle import read_manifest

    bundle = toy_bundle[0]
    art = read_manifest(bundle).artifacts["executorch-fp32"]
    run = _backend_load(bundle / "executorch-fp32", art.requirements, threads=1)
    h = np.zeros((1, 16), np.float32)
    assert len(run(np.zeros((1, 8), np.int32), h)) == 2
    assert len(run(np.zeros((8, 1), np.int32).T, np.zeros((16, 1), np.float32).T)) == 2  # non-contiguous: copied
    with pytest.raises(InputError, match="expects 2 inputs"):
        run(np.zeros((1, 8), np.int32))
    with pytest.raises(InputError, match="is int64, the method takes int32: pass .astype"):
        run(np.zeros((1, 8), np.int64), h)
    with pytest.raises(InputError, match="is float64, the method takes float32"):
        run(np.zeros((1, 8), np.int32), h.astype(np.float64))
    with pytest.raises(InputError, match="takes at most \\[3, 8\\]"):  # past the batch bound the program was planned for
        run(np.zeros((4, 8), np.int32), np.zeros((4, 16), np.float32))
    with pytest.raises(InputError, match="input 1 .* has shape \\[\\]"):  # a 0-d state
        run(np.zeros((1, 8), np.int32), np.float32(0))
    with pytest.raises(InputError, match="refused inputs of shapes \\[\\[1, 5\\], \\[1, 16\\]\\]"):  # a static dim
        run(np.zeros((1, 5), np.int32), h)
    with pytest.raises(InputError, match="refused inputs"):  # the two inputs' batches differ
        run(np.zeros((2, 8), np.int32), h)
    assert len(run(np.zeros((2, 8), np.int32), np.zeros((2, 16), np.float32))) == 2  # and it still runs
    copy = tmp_path / "art"
    shutil.copytree(bundle / "executorch-fp32", copy)
    (copy / "program.json").write_text(json.dumps({"program": "/etc/passwd", "method": "forward"}))
    with pytest.raises(BackendUnavailable, match="names program '/etc/passwd'"):
        _backend_load(copy, art.requirements)


def test_a_later_load_with_another_thread_count_keeps_the_pool_and_runs(toy_bundle):
    """Resetting XNNPACK's pool frees the one earlier methods hold: a verification load, then a session load with
    another count, segfaulted the process (a killed xdist worker). Later loads keep the first pool."""
    import gc

    from executorch.extension.pybindings import portable_lib

    from runtimes.bundle import read_manifest

    bundle = toy_bundle[0]
    art = read_manifest(bundle).artifacts["executorch-fp32"]
    first = _backend_load(bundle / "executorch-fp32", art.requirements, threads=None)
    args = np.zeros((2, 8), np.int32), np.zeros((2, 16), np.float32)
    want = first(*args)
    pool = portable_lib._threadpool_get_thread_count()
    del first
    gc.collect()
    runs = [_backend_load(bundle / "executorch-fp32", art.requirements, threads=n) for n in (pool + 1, 1, pool + 2)]
    assert portable_lib._threadpool_get_thread_count() == pool and {r.threads for r in runs} == {pool}
    for r in runs * 2:
        np.testing.assert_allclose(r(*args)[0], want[0])


def test_a_foreign_module_with_integer_state_passes_and_runs(tmp_path):
    import torch

    import exporters
    import runtimes
    from foreign import CASES

    case = next(c for c in CASES if c.name == "running_mean_int_state")
    module, inputs = case.make(), case.inputs()
    spec = exporters.describe(module, inputs, name=case.name, **case.options)
    from exporters.build import export_bundle

    (outcome,) = export_bundle(spec, ["executorch"], tmp_path / "b", "fp32")
    assert outcome.verdict == "passed", outcome.message
    session = runtimes.load(tmp_path / "b", backend="executorch")
    x, state, ref = inputs[0], session.new_state(2), inputs[1:]
    for _ in range(2):  # the float sum and the int64 count carried across calls
        out, state = session.run(x.numpy(), state)
        with torch.no_grad():
            want, *ref = module(x, *ref)
        np.testing.assert_allclose(out, want.numpy(), atol=1e-5)
    assert state[1].dtype == np.int64 and (state[1] == ref[1].numpy()).all() and state[1].max() == 6


def test_an_op_exir_refuses_is_a_conversion_error_naming_it(tmp_path):
    import exporters
    from exporters.build import export_bundle
    from foreign import CASES

    case = next(c for c in CASES if c.name == "erfinv")
    spec = exporters.describe(case.make(), case.inputs(), name=case.name, **case.options)
    (outcome,) = export_bundle(spec, ["executorch"], tmp_path / "b", "fp32")
    assert (outcome.verdict, outcome.error) == ("error", "ConversionError")
    assert "aten.erfinv" in outcome.message


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from test_methods import _export

    return _export(tmp_path_factory.mktemp("et-lm"), targets=("executorch",))


def test_the_lm_and_its_decode_methods_are_one_program_and_step_like_recompute(lm):
    from runtimes import load
    from runtimes.bundle import read_manifest

    assert lm.ok, str(lm)
    art = read_manifest(lm.bundle).artifacts["executorch-fp32"]
    assert {m: p.verdict for m, p in art.methods.items()} == {"enter": "passed", "step": "passed"}
    assert art.decode.verdict == "passed"
    assert [f.path for f in art.files if f.path.endswith(".pte")] == ["executorch-fp32/model.pte"]
    step = json.loads((lm.bundle / "executorch-fp32" / "step" / "program.json").read_text())
    assert step == {"program": "../model.pte", "method": "step"}
    session = load(lm.bundle, backend="executorch")
    assert session.decoding == "step"
    prompt = bytes(range(10)) * 2  # 2 whole chunks and 4 stepped tokens
    stepped = session.generate(prompt, 30, decode="step")
    assert len(stepped) == 30 and stepped == session.generate(prompt, 30, decode="recompute")
