"""Smoke run of the benchmark (no timing thresholds): it must keep working and keep its JSON shape."""
import json

from benchmarks.eager_latency import main


def test_smoke_run_prints_json_last(capsys, tmp_path):
    record = main(["--runs", "3", "--warmup", "1", "--out", str(tmp_path / "r.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == record == json.loads((tmp_path / "r.json").read_text())
    assert record["median_ms"] > 0 and record["flops_per_chunk"] > 1e6 and 1e6 < record["params"] <= 6e6


def test_long_stream_smoke_run(capsys):
    from benchmarks.long_stream import main as long_main

    record = long_main(["--bytes", str(4 * 128)])
    assert record["finite"] and 0 < record["max_state_over_bound"] <= 1.0 and record["chunks"] == 4
