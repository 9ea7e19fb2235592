"""The Session interface: input checks, threads, generation equality across artifacts, images."""
import threading

import numpy as np
import pytest
from click.testing import CliRunner

import runtimes
from runtimes.errors import InputError


@pytest.fixture(scope="module")
def bundle(neat_bundle):
    out, res = neat_bundle
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def session(bundle):
    return runtimes.load(bundle)


def chunk(session, batch=1, seed=0):
    T = session.manifest.signature["inputs"][0]["shape"][1]
    return np.random.default_rng(seed).integers(0, 256, (batch, T)).astype(np.int32)


def test_picks_the_aotinductor_package_on_this_cpu(session):
    assert session.backend.key == "cpu-fp32"
    assert "verification passed" in str(session.backend)  # the report says why it was chosen


@pytest.mark.parametrize("bad, message", [
    (lambda s, t, st: (t.astype(np.int64), st), "dtype int64, expected int32"),
    (lambda s, t, st: (t[:, :64], st), "expected (batch, 128)"),
    (lambda s, t, st: (t + 300, st), "ids outside [0, 277)"),
    (lambda s, t, st: (np.repeat(t, 5, 0), s.new_state(1) and [np.repeat(x, 5, 0) for x in st]), "outside this bundle's bounds 1..4"),
    (lambda s, t, st: (t, st[:-1]), "expected {n_state} state tensors"),
    (lambda s, t, st: (t, [st[0]] + [x[:, ..., :1] if x.ndim > 1 else x for x in st[1:]]), "has shape"),
    (lambda s, t, st: (t.tolist(), st), "must be a numpy array"),
    (lambda s, t, st: (t, s.new_state(2)), "has batch 2, the other inputs have 1"),
])
def test_bad_inputs_are_named_before_the_backend_sees_them(session, bad, message):
    tokens, state = bad(session, chunk(session), session.new_state(1))
    message = message.format(n_state=len(session.new_state(1)))  # the shipped model's: 8 (no memory, no experts)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        session.run(tokens, state)


def test_empty_prompt_is_refused(session):
    with pytest.raises(InputError, match="prompt is empty"):
        session.generate(b"")


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": "text"}, "prompt is a str: give bytes"),
    ({"prompt": [104, 105]}, "prompt must be bytes, got list"),
    ({"max_new_bytes": 2.5}, "max_new_bytes=2.5"),
    ({"max_new_bytes": -1}, "max_new_bytes=-1"),
    ({"max_new_bytes": True}, "max_new_bytes=True"),
    ({"temperature": float("nan")}, "temperature=nan"),
    ({"temperature": float("inf")}, "temperature=inf"),
    ({"temperature": -0.5}, "temperature=-0.5"),
    ({"temperature": "hot"}, "temperature='hot'"),
    ({"top_k": 278}, "top_k=278: .* vocabulary size 277"),
    ({"top_k": -1}, "top_k=-1"),
    ({"seed": -3}, "seed=-3"),
    ({"seed": 1.5}, "seed=1.5"),
])
def test_bad_generation_options_are_one_input_error(session, kwargs, message):
    args = {"prompt": b"hello", "max_new_bytes": 4, **kwargs}
    with pytest.raises(InputError, match=message):
        session.generate(**args)
    assert session.generate(b"hello", 3, temperature=0.7, top_k=277, seed=2)  # the edges are accepted


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_state_holding_nan_or_inf_is_refused(session, value):
    state = session.new_state(1)
    i = next(i for i, s in enumerate(state) if s.dtype.kind == "f" and s.size)
    state[i] = state[i].copy()
    state[i].flat[0] = value
    with pytest.raises(InputError, match="holds NaN or Inf: .*session.new_state"):
        session.run(chunk(session), state)


def test_a_missing_state_is_refused(session):
    for state in (None, 3, np.zeros(3, np.float32)):
        with pytest.raises(InputError, match="state must be a list of numpy arrays"):
            session.run(chunk(session), state)


def test_run_cli_passes_non_utf8_prompts_through_and_refuses_negative_lengths(bundle):
    from neat.cli import main

    res = CliRunner().invoke(main, ["run", str(bundle), "--prompt", "caf\udce9 ", "--max-bytes", "4"])
    assert res.exit_code == 0 and "generated " in res.output, res.output
    res = CliRunner().invoke(main, ["run", str(bundle), "--prompt", "x", "--max-bytes", "-1"])
    assert res.exit_code == 2 and "-1 is not in the range" in res.output


def test_threads_give_the_same_results_as_serial_calls(session):
    inputs = [chunk(session, 2, seed) for seed in range(4)]
    serial = [session.run(t, session.new_state(2))[0] for t in inputs]
    results = {}

    def work(i):
        for rep in range(3):
            results[(i, rep)] = session.run(inputs[i], session.new_state(2))[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (i, _), out in results.items():
        assert np.array_equal(out, serial[i])


PROMPT = b"def read_config(path):\n    \"\"\"Read the configuration file at path.\"\"\"\n    with open(path) as f:\n"


def test_stepping_generates_what_the_reference_generates_through_every_fp32_artifact(bundle):
    prompt = PROMPT * 3  # whole chunks through the chunk forward, the rest of the prompt stepped
    reference = runtimes.load(bundle, backend="eager").generate(prompt, 120, decode="recompute")
    texts = {}
    for backend in ("eager", "exported-fp32", "onnx-fp32", "cpu-fp32"):
        session = runtimes.load(bundle, backend=backend)
        assert session.decoding == "step", backend
        texts[backend] = session.generate(prompt, 120)  # crosses a chunk end while generating
    assert set(texts.values()) == {reference}, texts
    assert len(reference) == 120


def test_the_recompute_path_still_generates_the_same(session):
    out = session.generate(PROMPT * 2, max_new_bytes=20, decode="recompute")
    assert out == session.generate(PROMPT * 2, max_new_bytes=20, decode="step") and len(out) == 20


def test_sampling_is_reproducible_with_a_seed(session):
    a = session.generate(PROMPT, 16, temperature=0.8, top_k=20, seed=3)
    b = session.generate(PROMPT, 16, temperature=0.8, top_k=20, seed=3)
    assert a == b


def test_neat_run_streams_text_and_saves_drawn_images(bundle, tmp_path):
    from neat.cli import main

    prompt = "map:\n.A.#\n..H.\nK..D\n...G\ndraw: "
    res = CliRunner().invoke(main, ["run", str(bundle), "--prompt", prompt, "--max-bytes", "30",
                                    "--images", str(tmp_path / "img")])
    assert res.exit_code == 0, res.output
    assert "backend: cpu-fp32" in res.output
    pngs = list((tmp_path / "img").glob("*.png"))
    assert pngs and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_neat_info_explains_the_choice(bundle):
    from neat.cli import main

    res = CliRunner().invoke(main, ["info", str(bundle)])
    assert res.exit_code == 0, res.output
    assert "cpu-fp32" in res.output and "only on macOS" in res.output and "no NVIDIA GPU" in res.output
    import json

    js = json.loads(CliRunner().invoke(main, ["info", str(bundle), "--json"]).output)
    assert js["chosen"] == "cpu-fp32" and js["profile"]["os"]


def test_the_embedding_example_needs_no_model_code(bundle):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).parents[2] / "examples" / "embed.py"
    code = ("import runpy, sys; sys.argv = ['embed.py', %r, 'The module provides '];"
            "runpy.run_path(%r, run_name='__main__'); "
            "assert not [m for m in sys.modules if m == 'neat' or m.startswith('neat.')], 'neat was imported'"
            ) % (str(bundle), str(example))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "backend: cpu-fp32" in res.stderr and len(res.stdout) > 20


@pytest.mark.parametrize("backend, heavy", [("onnx-fp32", ["torch"]), ("cpu-fp32", ["torch._dynamo", "torch._inductor"])])
def test_cold_start_path_imports_nothing_it_does_not_need(bundle, backend, heavy):
    """Detection and loading stay off the expensive imports (the cold-start target depends on it): ONNX
    Runtime never needs torch; an AOTInductor package needs torch's runtime, not Dynamo or Inductor."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, runtimes; s = runtimes.load(sys.argv[1], backend=sys.argv[2]); "
            "s.run(np.zeros((1, 128), np.int32), s.new_state(1)); "
            "print([m for m in sys.argv[3:] if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code, str(bundle), backend, *heavy], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", f"{backend} imported {res.stdout.strip()}"


def test_a_bytes_prompt_prefills_chunk_by_chunk_like_a_list_of_ids(session):
    from runtimes.generate import prefill

    prompt = bytes(np.random.default_rng(3).integers(0, 256, 300).astype(np.uint8))
    state_b, last_b, rest_b = prefill(session, prompt)
    state_l, last_l, rest_l = prefill(session, list(prompt))
    assert rest_b == rest_l == list(prompt[256:]) and np.array_equal(last_b, last_l)
    assert all(np.array_equal(a, b) for a, b in zip(state_b, state_l))


def test_run_cli_reads_the_prompt_from_a_file_or_stdin(bundle, tmp_path):
    from neat.cli import main

    (tmp_path / "p.txt").write_bytes(b"def main():\n    return \xff")
    by_file = CliRunner().invoke(main, ["run", str(bundle), "--prompt-file", str(tmp_path / "p.txt"), "--max-bytes", "6"])
    by_stdin = CliRunner().invoke(main, ["run", str(bundle), "--prompt-file", "-", "--max-bytes", "6"],
                                  input=b"def main():\n    return \xff")
    assert by_file.exit_code == by_stdin.exit_code == 0, by_file.output + by_stdin.output
    assert by_file.stdout_bytes == by_stdin.stdout_bytes and len(by_file.stdout_bytes) > 1
    for args in ([], ["--prompt", "x", "--prompt-file", str(tmp_path / "p.txt")]):
        res = CliRunner().invoke(main, ["run", str(bundle), *args])
        assert res.exit_code == 2 and "--prompt TEXT or --prompt-file FILE" in res.output
