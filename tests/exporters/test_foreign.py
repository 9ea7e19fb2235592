"""The public suite of foreign modules: each through every target that builds here, with its verdict
asserted — "passed" (numeric, CoreML included through the NumPy evaluator), or the typed error named in
the case (README: support table)."""
import pytest

import exporters
from exporters import errors
from exporters.build import export_bundle
from exporters.registry import TARGETS
from foreign import CASES
from runtimes.bundle import read_manifest

pytestmark = pytest.mark.slow  # 23 modules through four targets: minutes

SUITE_TARGETS = ("exported", "onnx", "cpu", "coreml")
# AOTInductor compiles every core ATen op, and each package costs about 7 s of gcc here (all 23 modules: three
# minutes of the suite's ten). So `cpu` builds the modules whose interface is what differs (integer, bool and
# half dtypes, state, lifted buffers, control flow, dict outputs, outputs aliasing inputs); the modules there
# for op coverage (attention, convolutions, gather, erfinv, a GPT) go through the other targets, and the
# shipped model's bundle builds `cpu` for a whole LM with decode methods.
OPS_ONLY = {"gpt", "sdpa", "padded_attention", "encoder_layer", "conv_net", "conv1d", "upsample_groupnorm",
            "gather", "index_select", "erfinv"}


def buildable(case=None) -> list[str]:
    skip = {"cpu"} if case is not None and case.name in OPS_ONLY else set()
    return [t for t in SUITE_TARGETS if TARGETS[t].is_available()[0] and t not in skip]


@pytest.fixture(scope="session")
def exported_case(tmp_path_factory):
    """case name -> (spec, outcomes by target, bundle), built once per session."""
    done = {}

    def get(case):
        if case.name not in done:
            spec = exporters.describe(case.make(), case.inputs(), name=case.name, **case.options)
            out = tmp_path_factory.mktemp(case.name) / "bundle"
            outcomes = export_bundle(spec, buildable(case), out, "fp32")
            done[case.name] = spec, {o.target: o for o in outcomes}, out
        return done[case.name]

    return get


def test_the_suite_is_large_enough():
    assert len({c.make for c in CASES}) >= 20


@pytest.mark.parametrize("case", [c for c in CASES if not c.describe_error], ids=lambda c: c.name)
def test_foreign_module(case, exported_case):
    spec, outcomes, bundle = exported_case(case)
    assert set(outcomes) == set(buildable(case))
    for target, outcome in outcomes.items():
        want = case.expect.get(target, "passed")
        if want == "passed":
            assert outcome.verdict == "passed", f"{target}: {outcome.verdict}: {outcome.message}"
        else:
            assert (outcome.verdict, outcome.error) == ("error", want), f"{target}: {outcome.message}"
            assert issubclass(getattr(errors, want), errors.ExportError)
    manifest = read_manifest(bundle)
    for key, art in manifest.artifacts.items():  # every output and every state tensor was compared
        tensors = art.parity.worst["tensors"]
        assert set(tensors) == {t.name for t in spec.outputs} | {f"new_{t.name}" for t in spec.state}, key


@pytest.mark.parametrize("case", [c for c in CASES if c.describe_error], ids=lambda c: c.name)
def test_foreign_module_refused_with_a_typed_error(case):
    with pytest.raises(getattr(errors, case.describe_error)) as info:
        exporters.describe(case.make(), case.inputs(), name=case.name, **case.options)
    assert "lift_buffers=True" in str(info.value)  # the message names the fix
