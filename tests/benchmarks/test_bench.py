"""neat bench: the record, the Markdown view, and the baseline gate both ways (smoke: few runs, no timing
thresholds, so the benchmark itself never breaks)."""
import copy
import json

import pytest
from click.testing import CliRunner

import runtimes
from benchmarks.gate import gate, targets
from benchmarks.report import markdown


@pytest.fixture(scope="module")
def measured(neat_bundle, tmp_path_factory):
    """One `neat bench` run as a user runs it (the artifacts' cold starts included; torch.compile's first call
    is measured in its own test, on another bundle), written as JSON, Markdown and a plot: the directory
    holding r.json, r.md, r.png. Every test of the record reads this one measurement."""
    from neat.cli import main

    out, res = neat_bundle
    assert res.exit_code == 0, res.output
    files = tmp_path_factory.mktemp("bench")
    res = CliRunner().invoke(main, ["bench", str(out), "--runs", "3", "--generate-bytes", "48", "--no-torch-compile",
                                    "--json", str(files / "r.json"), "--markdown", str(files / "r.md"),
                                    "--plot", str(files / "r.png")])
    assert res.exit_code == 0, res.output
    err = res.stderr.splitlines()  # not a terminal: plain start and end lines around what it measures
    assert err[0] == f"start  benchmark {out}" and any(line.startswith(f"done   benchmark {out} (") for line in err)
    return files


@pytest.fixture(scope="module")
def record(measured):
    return json.loads((measured / "r.json").read_text())


def test_record_covers_every_runnable_artifact(record):
    names = [r["artifact"] for r in record["artifacts"]]
    assert names[0] == "eager" and {"cpu-fp32", "onnx-fp32", "exported-fp32"} <= set(names)
    for r in record["artifacts"]:
        assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["speedup_vs_eager"] > 0
        assert r["throughput_bytes_s"]["1"] > 0 and r["throughput_bytes_s"]["4"] > 0
        assert r["cold_start_s"] is not None and r["cold_start_s"] > 0 and r["peak_rss_mib"] > 10
        assert r["parity"]["argmax"] == 1.0 and r["generation_equal"]
        # fp32 artifacts score the held-out text as the reference does (the shipped model: ~2.5 bits/byte)
        assert 1.0 < r["bits_per_byte"] < 4.0
        assert abs(r["bits_per_byte"] - record["artifacts"][0]["bits_per_byte"]) < 1e-3
        if r["roofline"] is not None:  # every artifact that runs on the CPU (all of them on a CPU machine)
            assert 0 < r["roofline"]["limit_fraction"] <= 1.0 and r["roofline"]["bound_ms"] < r["p50_ms"]
    assert record["artifacts"][0]["roofline"] is not None  # eager always runs on the CPU
    assert record["artifacts"][0]["speedup_vs_eager"] == 1.0
    assert record["machine_limits"]["matmul_flops_s"] > 1e9 and record["machine_limits"]["bandwidth_bytes_s"] > 1e8
    work = record["work_per_chunk"]
    assert work["flops"] > 1e8 and work["bytes"]["int8"] < work["bytes"]["fp16"] < work["bytes"]["fp32"]
    assert record["chosen"] == runtimes.load(record["bundle"]).backend.key
    assert record["held_out"]["bytes"] == 2 * 8 * record["chunk_len"] and len(record["held_out"]["sha256"]) == 64
    assert record["torch_compile"] is None and "torch.compile" not in names  # --no-torch-compile: neither
    unmeasured = [t["target"] for t in record["targets"] if t["measured"] is None]
    assert len(record["targets"]) == 6 and unmeasured == ["torch.compile first call / chosen cold start"]
    tc = {"first_call_s": 60.0, "warm_cache_first_call_s": 10.0, "peak_rss_mib": 900.0, "error": None}
    assert all(t["measured"] is not None for t in targets({**record, "torch_compile": tc}))
    text = markdown(record)
    assert "| cpu-fp32 |" in text and "torch.compile first call: not measured" in text and "GFLOP/s" in text
    assert "| step bytes/s |" in text and "one stepped byte is" in text


def test_generation_is_measured_by_both_paths_for_every_artifact(record):
    assert record["generation"] == {"prompt_bytes": 1024, "bytes": 48, "threads": 1, "text": "held-out"}
    work = record["work_per_generated_byte"]
    assert work["steps"] == 48 and work["full_steps"] + work["light_steps"] == 48 and work["full_steps"] > 0
    assert work["flops"] > 1e5 and work["bytes"]["fp32"] > 1e5
    for r in record["artifacts"]:  # every artifact of the fp32 bundle carries the decode methods
        g = r["generation"]
        for path in ("step", "recompute"):
            assert g[path]["bytes"] == 48 and g[path]["ttfb_ms"] > 0 and g[path]["bytes_per_s"] > 0
            assert g[path]["p99_ms"] >= g[path]["p50_ms"] > 0
            assert g[path]["equal_to_reference"], (r["artifact"], path)  # same ids as eager recomputing
        assert g["step_vs_recompute"] > 0 and g["step_vs_eager_step"] > 0
        assert 0 < g["roofline"]["limit_fraction"] <= 1.0  # all run on this CPU, all fp32
    assert record["artifacts"][0]["generation"]["step_vs_eager_step"] == 1.0
    chosen = {r["artifact"]: r for r in record["artifacts"]}[record["chosen"]]["generation"]
    assert record["targets"][4]["measured"] == chosen["step_vs_recompute"]


def test_a_path_without_decode_methods_is_reported_as_recomputing(record):
    from benchmarks.bench import _generation
    from benchmarks.report import generation_cells

    runs = {"step": {"skipped": "x carries no decode methods (it recomputes)"},
            "recompute": {"ttfb_s": 0.01, "gaps_s": [0.002, 0.003], "ids": [1, 2, 3]}}
    g = _generation(runs, [1, 2, 3], record["work_per_generated_byte"], record["machine_limits"], True)
    assert "step_vs_recompute" not in g and "roofline" not in g and g["recompute"]["equal_to_reference"]
    cells = generation_cells({"artifact": "old", "generation": g})
    assert cells[4] == "recomputes" and cells[6] == "-" and cells[-1] == "same"
    assert _generation(runs, [1, 2, 4], None, record["machine_limits"], True)["recompute"]["equal_to_reference"] is False


def test_roofline_fraction_is_the_bound_over_the_latency():
    from benchmarks.roofline import fraction

    work = {"flops": 2e9, "bytes": {"fp32": 4e8, "fp16": 2e8}}
    machine = {"matmul_flops_s": 1e11, "bandwidth_bytes_s": 1e10}
    compute = fraction(work, machine, "fp32", 0.08)  # bound max(20 ms compute, 40 ms memory) = 40 ms
    assert compute["bound_by"] == "memory" and compute["limit_fraction"] == pytest.approx(0.5)
    half = fraction(work, machine, "fp16", 0.04)  # fp16 moves half the bytes: bound 20 ms either way
    assert half["limit_fraction"] == pytest.approx(0.5) and half["gflops_s"] == pytest.approx(50)


def test_torch_compile_first_call_and_steady_state(neat_fp16_bundle, tmp_path):
    """What the artifacts replace: the reference model under torch.compile, first called in a fresh process
    with an empty compile cache (any bundle carrying the reference). Cold only here: the warm restart (the same
    call again on that cache) is one more minute of compiling on these 2 cores, and `neat bench` measures it.
    Then its steady state in a benchmark worker, on that cache."""
    from benchmarks import coldstart
    from benchmarks.report import compile_line

    tc = coldstart.torch_compile(neat_fp16_bundle, tmp_path / "cache", warm=False)
    assert tc["error"] is None and tc["first_call_s"] > 1 and tc["peak_rss_mib"] > 10
    assert tc["warm_cache_first_call_s"] is None and any((tmp_path / "cache").iterdir())  # the cache it would reuse
    line = compile_line({"torch_compile": tc})
    assert line.startswith("torch.compile first call in a fresh process") and "warm one not measured" in line
    warm = compile_line({"torch_compile": {**tc, "warm_cache_first_call_s": 2.0}})
    assert warm.endswith("s with an empty compile cache, 2.0 s with a warm one")
    # its steady state: the Session `neat bench` times in a worker like the artifacts' (its parity, bits per byte
    # and generation are the record's). Dynamo's eager backend here: the same entry points and state, traced and
    # run, without a second minute of Inductor code generation (the first call above covered Inductor)
    from benchmarks import compiled
    from benchmarks.generation import timed

    session = compiled.session(neat_fp16_bundle, threads=1, backend="eager")
    reference = runtimes.load(neat_fp16_bundle, backend="eager")
    prompt = list(b"def main():\n    return 1\n" * 3)
    assert timed(session, "recompute", prompt, 6)["ids"] == timed(reference, "recompute", prompt, 6)["ids"]
    assert runtimes.load(neat_fp16_bundle).backend.key != compiled.LABEL  # never an artifact of the bundle


def test_torch_compile_row_is_never_the_best_artifact():
    """The compiled reference is what the artifacts are compared with: a faster one is not 'the best artifact'."""
    def row(name, p50):
        return {"artifact": name, "p50_ms": p50, "speedup_vs_eager": 20.0 / p50, "roofline": {"limit_fraction": 0.1},
                "cold_start_s": 1.0}

    record = {"artifacts": [row("eager", 20.0), row("cpu-fp32", 5.0), row("onnx-fp32", 10.0)], "chosen": "cpu-fp32",
              "generation": None, "torch_compile": None}
    best = targets(record)[:2]
    assert best[0]["target"] == "best compiled CPU artifact (cpu-fp32) vs eager" and best[0]["measured"] == 4.0
    record["artifacts"].insert(1, row("torch.compile", 1.0))
    assert targets(record)[:2] == best


def test_a_worker_that_cannot_load_names_the_artifact(neat_bundle):
    from benchmarks.timing import Workers

    out, _ = neat_bundle
    with pytest.raises(RuntimeError, match=r"worker for no-such-artifact failed \(exit code 1\): .*BackendUnavailable"):
        Workers(out, ["eager", "no-such-artifact"])


def test_gate_passes_the_baseline_itself_and_catches_planted_regressions(record):
    assert gate(record, record, 10) == []
    slower = copy.deepcopy(record)
    for r in slower["artifacts"]:
        if r["artifact"] == "cpu-fp32":
            r["speedup_vs_eager"] *= 0.5
    problems = gate(slower, record, 10)
    assert len(problems) == 1 and problems[0].startswith("cpu-fp32: speed")
    worse = copy.deepcopy(record)
    worse["artifacts"][1]["parity"]["argmax"] = 0.9
    worse["artifacts"][1]["generation_equal"] = False
    assert len(gate(worse, record, 10)) == 2
    worse["artifacts"][1]["generation"]["step"]["equal_to_reference"] = False
    assert len(gate(worse, record, 10)) == 3 and "generation by step now differs" in gate(worse, record, 10)[-1]
    vaguer = copy.deepcopy(record)
    vaguer["artifacts"][1]["bits_per_byte"] *= 1.05
    assert len(gate(vaguer, record, 10)) == 1 and "bits per byte" in gate(vaguer, record, 10)[0]
    vaguer["held_out"]["sha256"] = "0" * 64  # another Python's standard library: another text, not comparable
    assert gate(vaguer, record, 10) == []
    fewer = copy.deepcopy(record)
    fewer["artifacts"] = fewer["artifacts"][:1]
    assert any("not measured" in p for p in gate(fewer, record, 10))


def test_cli_writes_json_and_markdown_and_gates(measured, tmp_path):
    from neat.cli import main

    assert (measured / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((measured / "r.json").read_text())
    assert saved["artifacts"][0]["artifact"] == "eager" and (measured / "r.md").read_text().startswith("# neat bench")
    stored = ["bench", "--record", str(measured / "r.json")]  # the measured run, gated without measuring again
    res = CliRunner().invoke(main, stored + ["--baseline", str(measured / "r.json"), "--max-regression", "95"])
    assert res.exit_code == 0 and "cpu-fp32" in res.output and "no regression against" in res.output, res.output
    planted = copy.deepcopy(saved)
    for r in planted["artifacts"][1:]:
        r["speedup_vs_eager"] *= 100  # a baseline far faster than anything here: must fail
    (tmp_path / "fast.json").write_text(json.dumps(planted))
    res = CliRunner().invoke(main, stored + ["--baseline", str(tmp_path / "fast.json")])
    assert res.exit_code == 1 and "regression against" in res.output


def test_bench_refuses_what_is_not_a_record(measured, tmp_path):
    from neat.cli import main

    (tmp_path / "x.json").write_text('{"artifacts": []}')
    (tmp_path / "y.json").write_bytes(b"\xff not json")
    for bad in ("x.json", "y.json"):
        res = CliRunner().invoke(main, ["bench", "--record", str(tmp_path / bad)])
        assert res.exit_code == 1 and "not a neat bench record" in res.output and "Traceback" not in res.output
        res = CliRunner().invoke(main, ["bench", "--record", str(measured / "r.json"), "--baseline", str(tmp_path / bad)])
        assert res.exit_code == 1 and "not a neat bench record" in res.output
    res = CliRunner().invoke(main, ["bench", str(tmp_path), "--record", str(measured / "r.json")])
    assert res.exit_code == 2 and "not both" in res.output


def test_a_row_without_cpu_limits_shows_a_dash(record):
    from benchmarks.report import limit_cell

    gpu_like = copy.deepcopy(record)
    gpu_like["artifacts"][1]["roofline"] = None  # what a CUDA or TensorRT artifact gets
    assert limit_cell(gpu_like["artifacts"][1]) == "-" and limit_cell(record["artifacts"][1]).endswith("%")
    assert f"| {gpu_like['artifacts'][1]['artifact']} |" in markdown(gpu_like)


def test_regression_script_fails_on_a_planted_regression(record, measured, tmp_path):
    from benchmarks import regression

    update = regression.options(regression.parse(["--update"]))
    assert update["plot_out"] == regression.RESULTS / "bench_cpu.png" and "baseline" not in update
    check = regression.options(regression.parse([]))
    assert check["cold_start"] is False and check["max_regression"] == 25.0
    planted = copy.deepcopy(record)
    for r in planted["artifacts"][1:]:
        r["speedup_vs_eager"] *= 100  # a baseline far faster than anything here
    (tmp_path / "fast.json").write_text(json.dumps(planted))
    assert regression.main(["--record", str(measured / "r.json"), "--baseline", str(tmp_path / "fast.json")]) == 1
    assert regression.main(["--record", str(measured / "r.json"), "--baseline", str(measured / "r.json")]) == 0


def test_mlx_on_the_cpu_is_not_taken_for_the_best_compiled_cpu_artifact():
    from benchmarks.gate import targets

    row = lambda name, p50: {"artifact": name, "p50_ms": p50, "speedup_vs_eager": 20.0 / p50, "roofline": {"x": 1}}
    record = {"artifacts": [row("eager", 20.0), row("onnx-fp32", 10.0), row("mlx-fp32", 5.0)], "chosen": "onnx-fp32"}
    best = targets(record)[0]
    assert best["target"].startswith("best compiled CPU artifact (-)") and best["measured"] is None
    best = targets({**record, "artifacts": record["artifacts"] + [row("cpu-fp32", 8.0)]})[0]
    assert "(cpu-fp32)" in best["target"] and best["measured"] == 2.5
