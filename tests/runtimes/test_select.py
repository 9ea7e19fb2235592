"""Selection and fallback for Apple, NVIDIA and CPU-only machines (profiles are plain data)."""
import shutil

import pytest

import runtimes
from runtimes.bundle import read_manifest
from runtimes.errors import BackendUnavailable
from runtimes.profile import CudaDevice, HardwareProfile, detect
from runtimes.select import rank


@pytest.fixture(scope="module")
def bundle(neat_bundle):
    out, res = neat_bundle
    assert res.exit_code == 0, res.output
    return out


def linux_cpu(**changes) -> HardwareProfile:
    here = detect()
    base = dict(os="Linux", arch=here.arch, cpu="test CPU", isa=here.isa, cores=8, memory_bytes=2**34,
                libraries={k: v for k, v in here.libraries.items() if k in ("torch", "aoti", "onnxruntime")})
    return HardwareProfile(**{**base, **changes})


def nvidia(cc: str) -> HardwareProfile:
    here = detect()
    libs = {**linux_cpu().libraries, "tensorrt_rtx": here.libraries.get("tensorrt_rtx", "1.7.1.116")}
    return linux_cpu(cuda=(CudaDevice("RTX test GPU", cc, 2**34),), libraries=libs)


def apple() -> HardwareProfile:
    return HardwareProfile(os="Darwin", arch="arm64", cpu="Apple M3", isa=("neon",), apple_silicon=True,
                           os_version="15.1", libraries={"torch": "2.13.0", "aoti": "2.13.0",
                                                         "coremltools": "9.0", "onnxruntime": "1.31.1"})


def order(ranking):
    return [c.key for c in ranking]


def test_cpu_machine_prefers_aotinductor_then_onnx(bundle):
    ranking = rank(read_manifest(bundle), linux_cpu(), bundle)
    usable = [c.key for c in ranking if c.usable and c.preferred]
    assert usable == ["cpu-fp32", "onnx-fp32", "exported-fp32", "eager"]
    skipped = {c.key: c.reason for c in ranking if not c.usable}
    assert "no NVIDIA GPU" in skipped["tensorrt-fp32"] or "not installed" in skipped["tensorrt-fp32"]
    assert "only on macOS" in skipped["coreml-fp32"]


def test_nvidia_machine_prefers_tensorrt_when_the_engine_matches(bundle):
    ranking = rank(read_manifest(bundle), nvidia("8.9"), bundle)
    assert ranking[0].key == "tensorrt-fp32" and ranking[0].usable and ranking[0].preferred
    other = rank(read_manifest(bundle), nvidia("9.0"), bundle)
    trt = next(c for c in other if c.key == "tensorrt-fp32")
    assert not trt.usable and "--compute-capability 9.0" in trt.reason
    assert next(c for c in other if c.usable and c.preferred).key == "onnx-fp32"  # no cuda package: onnx next


def test_apple_machine_prefers_coreml(bundle):
    ranking = rank(read_manifest(bundle), apple(), bundle)
    assert ranking[0].key == "coreml-fp32" and ranking[0].usable
    cpu = next(c for c in ranking if c.key == "cpu-fp32")
    assert not cpu.usable and "arm64" in cpu.reason  # an x86 AOTInductor package does not run on Apple Silicon


def test_falls_back_when_the_first_choice_is_corrupted(bundle, tmp_path, caplog):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    pkg = copy / "cpu-fp32" / "model.pt2"
    pkg.write_bytes(pkg.read_bytes()[:-10])
    with caplog.at_level("WARNING", logger="runtimes"):
        session = runtimes.load(copy, profile=linux_cpu())
    assert session.backend.key == "onnx-fp32"
    assert any(c.key == "cpu-fp32" and "truncated" in c.reason for c in session.backend.skipped)
    # the fallback is not silent: a warning names the artifact and why
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("cpu-fp32: not loaded (IntegrityError") and "truncated" in m for m in warned), warned


def test_falls_back_when_requirements_do_not_match(bundle):
    session = runtimes.load(bundle, profile=linux_cpu(isa=()))
    cpu = next(c for c in session.backend.skipped if c.key == "cpu-fp32")
    assert session.backend.key == "onnx-fp32" and "needs CPU features" in cpu.reason


def test_forced_backend(bundle):
    assert runtimes.load(bundle, backend="exported").backend.key == "exported-fp32"
    assert runtimes.load(bundle, backend="eager").backend.key == "eager"
    with pytest.raises(BackendUnavailable, match="CoreML runs only on macOS"):
        runtimes.load(bundle, backend="coreml", profile=linux_cpu())
    with pytest.raises(BackendUnavailable, match="has no artifact 'tflite'"):
        runtimes.load(bundle, backend="tflite")


def test_profile_override_by_environment(tmp_path, monkeypatch):
    import json

    path = tmp_path / "p.json"
    path.write_text(json.dumps(apple().to_dict()))
    monkeypatch.setenv("NEAT_PROFILE", str(path))
    try:
        assert detect(refresh=True).kind == "apple"
    finally:
        monkeypatch.delenv("NEAT_PROFILE")
        detect(refresh=True)


def test_the_default_pick_follows_a_cached_measurement_of_generation(bundle, tmp_path, monkeypatch):
    """On a CPU machine the first load times the usable CPU artifacts (not eager) by generating (a damaged
    cache is measured again, not an error); later loads reuse the figures; NEAT_PICK=static skips it all."""
    import json

    from click.testing import CliRunner

    from neat.cli import main

    monkeypatch.setenv("NEAT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NEAT_PICK", "measured")
    cache = tmp_path / "autotune.json"
    cache.write_text("{not json")
    said = CliRunner().invoke(main, ["info", str(bundle)]).output
    assert "pick: the static order: runtimes.load measures" in said  # before: nothing cached, it says so
    first = runtimes.load(bundle)
    said = CliRunner().invoke(main, ["info", str(bundle), "--json"]).output
    assert json.loads(said)["chosen"] == first.backend.key and "cached" in json.loads(said)["pick"]
    (figures,) = json.loads(cache.read_text()).values()
    assert "eager" not in figures and "cpu-fp32" in figures  # then onnx, exported while within about 2 s
    assert first.backend.key in figures and "ms per generated byte" in first.backend.reason
    again = runtimes.load(bundle)
    assert again.backend.key == first.backend.key and list(json.loads(cache.read_text()).values()) == [figures]
    monkeypatch.setenv("NEAT_PICK", "static")
    static = runtimes.load(bundle)
    assert static.backend.key == "cpu-fp32" and "measured" not in static.backend.reason


@pytest.mark.parametrize("figures, first", [({"cpu": 1.0, "onnx": 0.5, "exported": 2.0}, "onnx"),
                                            ({"cpu": 1.04, "onnx": 1.0, "exported": 2.0}, "cpu"),  # a tie: static
                                            # cpu fails; exported, the third, is not timed
                                            ({"cpu": None, "onnx": 3.0, "exported": 2.0}, "onnx")])
def test_the_measured_order_is_by_speed_with_ties_to_the_static_order(tmp_path, monkeypatch, figures, first):
    """The ranking rule alone (runtimes.measured), on given figures: None is a candidate that failed."""
    from runtimes import measured
    from runtimes.select import Candidate

    monkeypatch.setenv("NEAT_CACHE_DIR", str(tmp_path))

    def per_byte(session):
        if figures[session] is None:
            raise RuntimeError("does not load")
        return figures[session]

    monkeypatch.setattr(measured, "per_byte", per_byte)
    ranked = [Candidate(f"{t}-fp32", t, True, t) for t in ("cpu", "onnx", "exported")]
    ranked.append(Candidate("eager", "eager", True, "reference"))
    opened = {}
    order = measured.rank_measured(ranked, "fp", lambda c: c.target, everything=False, opened=opened)
    assert order[0].target == first and order[-1].key == "eager" and "ms per generated byte" in order[0].reason
    assert "exported-fp32" not in opened and opened[f"{first}-fp32"] == first  # the winner's session, kept
    assert [c.key for c in measured.cached(ranked, "fp")] == [c.key for c in order]  # from the cache alone
    assert measured.cached(ranked, "another bundle") is None
    assert measured.wanted(None, "nvidia") is False and measured.wanted(True, "nvidia") is True


def test_a_cpu_only_torch_build_is_told_without_importing_torch():
    from runtimes.profile import build_cuda

    assert build_cuda("cuda: Optional[str] = '12.8'\nhip = None") == "12.8"
    assert build_cuda("cuda = '11.8'") == "11.8"
    assert build_cuda("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None") is None
    assert build_cuda("nothing here") is True  # cannot tell: torch is imported and asked


def test_the_eager_fallback_needs_the_model_code_the_bundle_names(bundle, tmp_path):
    import json

    from runtimes.manifest import MANIFEST
    from runtimes.trust import own_key, sign_bundle

    assert read_manifest(bundle).model["reference_loader"] == "neat"
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    for name, words in (("os:system", "no installed package provides the reference loader 'os:system'"),
                        ("", "names no reference loader")):
        raw = json.loads((copy / MANIFEST).read_text())
        raw["model"]["reference_loader"] = name
        (copy / MANIFEST).write_text(json.dumps(raw))
        sign_bundle(copy, own_key())  # a changed manifest is re-signed, or its code-bearing artifacts are refused
        with pytest.raises(BackendUnavailable, match=words):
            runtimes.load(copy, backend="eager")
        assert runtimes.load(copy).backend.key == "cpu-fp32"  # everything else still loads
