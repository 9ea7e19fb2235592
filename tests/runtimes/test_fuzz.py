"""No traceback on any input (issue 14): a real manifest, mutated a few thousand ways (types changed at any
depth, keys deleted and added, values swapped, huge/negative numbers, NaN, deep nesting, non-UTF-8 bytes,
truncation), goes through read_manifest, runtimes.load (automatic and forced) and `neat info`; the inputs of
Session.run / call / generate are fuzzed on loaded sessions. Everything either works or raises a typed
runtime error (runtimes.errors.RuntimeLayerError) with a one-line message; nothing else escapes.
Reproducible: hypothesis derandomized, no database."""
import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import runtimes  # noqa: E402
import runtimes.errors  # noqa: E402
from runtimes import backends  # noqa: E402
from runtimes.bundle import read_manifest  # noqa: E402
from runtimes.errors import InputError, RuntimeLayerError  # noqa: E402
from runtimes.manifest import MANIFEST  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "exporters"))
from toy import toy_spec  # noqa: E402

FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=True,
            suppress_health_check=list(HealthCheck))
# a failure of a backend's own library while loading a hashed, listed file is a reason to fall back; the
# runtime's own code failing on a manifest value is a crash, even when load catches it and falls back
CRASHES = ("KeyError", "TypeError", "AttributeError", "IndexError", "RecursionError", "ValueError",
           "OverflowError", "ZeroDivisionError", "UnicodeError", "AssertionError", "NameError")
TYPED = tuple(cls.__name__ for cls in [RuntimeLayerError, *RuntimeLayerError.__subclasses__()]) + (
    "IntegrityError", "SignatureError")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The toy module exported to exported and onnx (fp32), built once for the module."""
    from exporters.build import export_bundle

    out = tmp_path_factory.mktemp("fuzz") / "bundle"
    outcomes = export_bundle(toy_spec(), ["exported", "onnx"], out, "fp32", {})
    assert all(o.ok for o in outcomes), [(o.key, o.message) for o in outcomes]
    return out


@pytest.fixture(scope="module")
def work(bundle, tmp_path_factory):
    """A copy of the bundle whose manifest.json each example overwrites (the other files never change)."""
    dst = tmp_path_factory.mktemp("fuzz-work") / "bundle"
    shutil.copytree(bundle, dst)
    return dst


@pytest.fixture(scope="module")
def original(bundle) -> dict:
    return json.loads((bundle / MANIFEST).read_text())


def assert_typed(exc: BaseException) -> None:
    """A typed runtime error with one clear line, that names no crash of the runtime's own code."""
    assert isinstance(exc, RuntimeLayerError), f"{type(exc).__name__} escaped: {exc}"
    text = str(exc)
    assert text.strip() and "\n" not in text, f"not a single line: {text!r}"
    crashed = [name for name in re.findall(r"failed to load: (\w+):", text) if name not in TYPED]
    assert not any(c in CRASHES for c in crashed), f"a crash was caught and fell back: {text}"


def attempt(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - what escapes is exactly what is checked
        assert_typed(exc)
        return None


# ----- mutations of a manifest ------------------------------------------------------------------------------
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([2**63, -2**63 - 1, 10**400, 1e308, -1e308, 1e-320]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["batch", "int32", "float32", "passed", "onnx", "exported", "cpu", "tensorrt", "coreml",
                     "cuda", "eager", "fp32", "fp16", "model.onnx", "../x", "/etc/passwd", "", "a" * 70]),
)
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=8)
OPS = ("replace", "delete", "add", "swap", "nest", "retarget", "empty")
TARGETS = ("exported", "onnx", "cpu", "cuda", "tensorrt", "coreml", "eager", "nope")


def pick_path(data, tree) -> list:
    """A path into the tree, each depth as likely as the next: at every node stop, or go into a child."""
    path, node = [], tree
    while isinstance(node, (dict, list)) and node and data.draw(st.integers(0, 3)) > 0:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        k = data.draw(st.sampled_from(keys))
        path.append(k)
        node = node[k]
    return path


def at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def mutate(data, tree: dict) -> dict:
    op = data.draw(st.sampled_from(OPS))
    path = pick_path(data, tree)
    parent, key = (at(tree, path[:-1]), path[-1]) if path else (None, None)
    if op == "retarget":  # rename an artifact to another target, key and target together (reach other backends)
        arts = tree.get("artifacts") if isinstance(tree, dict) else None
        if isinstance(arts, dict) and arts:
            old = data.draw(st.sampled_from(sorted(arts, key=str)))
            art = arts.pop(old)
            if isinstance(art, dict):
                art["target"] = data.draw(st.sampled_from(TARGETS))
                art["precision"] = art.get("precision") if isinstance(art.get("precision"), str) else "fp32"
                if data.draw(st.booleans()):
                    art["requirements"] = data.draw(st.dictionaries(st.sampled_from(
                        ["torch", "compute_capability", "cpu_isa", "deployment_target", "os", "arch", "tensorrt",
                         "flavour", "compute_capabilities", "device", "macos", "libraries"]), VALUES, max_size=3))
            arts[f"{art.get('target')}-{art.get('precision')}" if isinstance(art, dict) else old] = art
        return tree
    if parent is None:
        return data.draw(VALUES) if op == "replace" else tree
    if op == "replace":
        parent[key] = data.draw(VALUES)
    elif op == "delete":
        del parent[key]
    elif op == "empty":
        parent[key] = type(parent[key])() if isinstance(parent[key], (dict, list, str)) else 0
    elif op == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8))] = data.draw(VALUES)
    elif op == "add":
        parent.insert(key, data.draw(VALUES))
    elif op == "swap":
        other = pick_path(data, tree)
        if other and other[:len(path)] != path and path[:len(other)] != other:
            parent[key] = at(tree, other)
    elif op == "nest":
        deep = data.draw(st.sampled_from([5, 200, 5000]))
        value = parent[key]
        for _ in range(deep):
            value = [value] if deep % 2 else {"x": value}
        parent[key] = value
    return tree


def encode(data, tree) -> bytes:
    try:
        text = json.dumps(tree, allow_nan=True).encode()
    except (RecursionError, ValueError):
        text = b"[" * 100000
    how = data.draw(st.sampled_from(["as is"] * 6 + ["truncate", "bytes", "flip"]))
    if how == "truncate":
        return text[: data.draw(st.integers(0, len(text)))]
    if how == "bytes":
        i = data.draw(st.integers(0, len(text)))
        return text[:i] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x80\x80"])) + text[i:]
    i = data.draw(st.integers(0, max(0, len(text) - 1)))
    return text[:i] + bytes([text[i] ^ (1 << data.draw(st.integers(0, 7)))]) + text[i + 1:] if text else text


def mutated(data, original: dict) -> bytes:
    tree = json.loads(json.dumps(original))
    for _ in range(data.draw(st.integers(1, 3))):
        tree = mutate(data, tree)
    return encode(data, tree)


def check_bundle(work: Path, text: bytes, backend_names=()) -> None:
    (work / MANIFEST).write_bytes(text)
    attempt(read_manifest, work)
    session = attempt(runtimes.load, work)
    if session is not None:
        attempt(session.generate, b"ab", max_new_bytes=2)
    for name in backend_names:
        attempt(runtimes.load, work, backend=name)


def _set(path, value):
    def edit(m):
        at(m, path[:-1])[path[-1]] = value
    return edit


def _drop(path):
    def edit(m):
        del at(m, path[:-1])[path[-1]]
    return edit


# each crash the fuzzing found (the exception that escaped, and where), as a manifest edit
FOUND = {
    "outputs without a shape: KeyError in generate.check_options": _drop(["signature", "outputs", 0, "shape"]),
    "an input without a dtype: KeyError in Session._check": _drop(["signature", "inputs", 0, "dtype"]),
    "a state renamed: KeyError in read_init_state": _set(["signature", "state", 0, "name"], "in432"),
    "signature.dynamic a string: AttributeError in Session()": _set(["signature", "dynamic"], "batch"),
    "batch bounds not numbers: TypeError in Session._check_batch": _set(["signature", "dynamic", "batch", "max"], None),
    "cpu_isa holding null: TypeError in backends.cpu.problem": lambda m: m["artifacts"].__setitem__(
        "cpu-fp32", {**m["artifacts"]["onnx-fp32"], "target": "cpu", "requirements": {"cpu_isa": [None]}}),
    "token range wider than the model: onnxruntime InvalidArgument from Session.run": _set(
        ["signature", "inputs", 0, "range"], [0, 300]),
    "build_seconds 10**400: OverflowError in parse_manifest": _set(
        ["artifacts", "onnx-fp32", "build_seconds"], 10**400),
    "decode roles naming lists: TypeError in roles_problem": _set(["signature", "decode"], {"enter": [], "step": []}),
    "a state of another shape than its initial value: ValueError in the backend": _set(
        ["signature", "state", 0, "shape"], ["batch", 17]),
    "a chunk length of 0: an endless prefill loop": _set(["signature", "inputs", 0, "shape"], ["batch", 0]),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_found_crashes_are_typed_errors(work, original, case):
    """Regressions: each of these once escaped as another exception; now a typed error with one line."""
    tree = json.loads(json.dumps(original))
    FOUND[case](tree)
    (work / MANIFEST).write_bytes(json.dumps(tree).encode())
    session = attempt(runtimes.load, work, backend="onnx")
    if session is not None:
        attempt(session.generate, b"a" * 9, max_new_bytes=2)
        attempt(session.run, np.full((1, 8), 97, np.int32), session.new_state(1))


def test_loaders_open_only_listed_files(bundle, tmp_path):
    """A manifest that does not list (so does not hash) the file its backend opens is refused before loading,
    by runtimes.load and by the exporters' verification: a swapped model.onnx with `files: []` never runs."""
    from exporters.build import verify_bundle
    from runtimes.bundle import file_problems

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    tree = json.loads((copy / MANIFEST).read_text())
    tree["artifacts"]["onnx-fp32"]["files"] = []
    (copy / MANIFEST).write_text(json.dumps(tree))
    (copy / "onnx-fp32" / "model.onnx").write_bytes(b"tampered")
    art = read_manifest(copy).artifacts["onnx-fp32"]
    assert file_problems(copy, art) == [  # both files the CPU provider may open (the plain and the optimized graph)
        f"artifact onnx-fp32 does not list onnx-fp32/{f}, which its backend loads: re-export it"
        for f in ("model.onnx", "model.ort.onnx")]
    with pytest.raises(runtimes.errors.BackendUnavailable, match="does not list onnx-fp32/model.onnx"):
        runtimes.load(copy, backend="onnx")
    assert runtimes.load(copy).backend.key == "exported-fp32"  # falls back past it
    (outcome,) = verify_bundle(copy, toy_spec(), keys=("onnx-fp32",))
    assert outcome.verdict == "failed" and "does not list onnx-fp32/model.onnx" in outcome.message
    # a method directory not listed either: the same refusal names it
    tree["artifacts"]["exported-fp32"]["files"] = [f for f in tree["artifacts"]["exported-fp32"]["files"]
                                                   if not f["path"].endswith("model.pt2")]
    (copy / MANIFEST).write_text(json.dumps(tree))
    with pytest.raises(runtimes.errors.BackendUnavailable, match="does not list exported-fp32/model.pt2"):
        runtimes.load(copy, backend="exported")


@settings(max_examples=900, **FUZZ)
@given(st.data())
def test_mutated_manifests_load_or_fail_typed(work, original, data):
    text = mutated(data, original)
    names = data.draw(st.lists(st.sampled_from(["onnx", "exported", "onnx-fp32", "eager", "cpu", "x"]), max_size=2))
    check_bundle(work, text, names)


def test_mutated_manifests_through_neat_info(work, original):
    from click.testing import CliRunner

    from neat.cli import main

    @settings(max_examples=150, **FUZZ)
    @given(st.data())
    def run(data):
        (work / MANIFEST).write_bytes(mutated(data, original))
        result = CliRunner().invoke(main, ["info", str(work), "--json"])
        assert result.exit_code in (0, 1), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)

    run()


@settings(max_examples=300, **FUZZ)
@given(requirements=st.one_of(VALUES, st.dictionaries(st.text(max_size=20), VALUES, max_size=4)),
       name=st.sampled_from(sorted(backends.BACKENDS)))
def test_backend_requirements_never_crash(requirements, name):
    """Every backend decides from any manifest `requirements` value: '' or a reason, never a crash."""
    from runtimes.manifest import check_requirements

    if not isinstance(requirements, dict) or attempt(check_requirements, requirements, "artifacts.x") is None:
        return  # refused by the schema (a typed error), never seen by a backend
    why = attempt(backends.get(name).problem, requirements, runtimes.detect())
    assert why is None or isinstance(why, str)


# ----- inputs of a loaded session ---------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["onnx", "exported"])
def session(bundle, request):
    return runtimes.load(bundle, backend=request.param)


DTYPES = st.sampled_from([np.int32, np.int64, np.int8, np.uint8, np.float32, np.float16, np.float64, np.bool_,
                          np.complex64, np.object_, np.str_])


def arrays(shape_hint):
    return st.one_of(
        hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
        hnp.arrays(st.sampled_from([np.int32, np.float32]), st.sampled_from(shape_hint)),
        st.sampled_from([None, 3, "tokens", [1, 2], b"ab"]),
    )


@settings(max_examples=400, **FUZZ)
@given(data=st.data())
def test_run_inputs_are_checked(session, data):
    tokens = data.draw(arrays([(1, 8), (3, 8), (4, 8), (1, 7), (0, 8), (8,)]))
    if data.draw(st.booleans()):
        state = session.new_state(data.draw(st.integers(1, 3)))
    else:
        state = data.draw(st.one_of(st.lists(arrays([(1, 16), (3, 16), (2, 16), (16,)]), max_size=2),
                                    st.sampled_from([None, 0, "h"]), arrays([(1, 16)])))
    for call in (lambda: session.run(tokens, state), lambda: session.call(tokens, state=state)):
        try:
            call()
        except Exception as exc:  # noqa: BLE001
            assert isinstance(exc, InputError), f"{type(exc).__name__}: {exc}"
            assert_typed(exc)
    attempt(session.new_state, data.draw(st.one_of(st.integers(-2, 5), st.sampled_from([None, 1.5, "1", 2**70]))))


ODD = st.sampled_from([None, "1", 1.5, -1, 2**70, -(2**70), float("nan"), float("inf"), [], True, np.float64(2.0),
                       np.int64(3), 10**400, 1e308])


@settings(max_examples=400, **FUZZ)
@given(prompt=st.one_of(st.binary(max_size=20), st.text(max_size=5), ODD, st.sampled_from([bytearray(b"ab"),
                                                                                         memoryview(b"xy")])),
       max_new_bytes=st.one_of(st.integers(-3, 6), ODD.filter(lambda v: not (isinstance(v, int) and v > 6))), temperature=st.one_of(st.floats(), ODD),
       top_k=st.one_of(st.integers(-3, 60), ODD), seed=st.one_of(st.integers(-2, 2**70), ODD),
       decode=st.sampled_from(["auto", "step", "recompute", "", "x", None]))
@example(prompt=b"a", max_new_bytes=2, temperature=10**400, top_k=0, seed=0, decode="auto")
@example(prompt=b"a", max_new_bytes=2, temperature=0.5, top_k=0, seed=2**70, decode="auto")
@example(prompt=b"a", max_new_bytes=2, temperature=1e-320, top_k=3, seed=0, decode="auto")
def test_generate_options_are_checked(session, prompt, max_new_bytes, temperature, top_k, seed, decode):
    try:
        out = session.generate(prompt, max_new_bytes=max_new_bytes, temperature=temperature, top_k=top_k,
                               seed=seed, decode=decode)
    except Exception as exc:  # noqa: BLE001
        assert isinstance(exc, InputError), f"{type(exc).__name__}: {exc}"
        assert_typed(exc)
        return
    assert isinstance(out, bytes) and len(out) <= max_new_bytes
    assert not (isinstance(temperature, float) and math.isnan(temperature))


def test_found_input_crashes_are_input_errors(session):
    """Regressions: new_state(None) (TypeError comparing), call(state=0) (TypeError iterating), and
    temperature=10**400 (TypeError in np.isfinite) now raise InputError."""
    tokens = np.zeros((1, 8), np.int32)
    for call in (lambda: session.new_state(None), lambda: session.call(tokens, state=0),
                 lambda: session.generate(b"a", max_new_bytes=1, temperature=10**400)):
        with pytest.raises(InputError):
            call()
