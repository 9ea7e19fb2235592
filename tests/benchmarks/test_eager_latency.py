"""Smoke run of the benchmark (no timing thresholds): it must keep working and keep its JSON shape."""
import json

from benchmarks.eager_latency import main


def test_smoke_run_prints_json_last(capsys, tmp_path):
    record = main(["--runs", "3", "--warmup", "1", "--out", str(tmp_path / "r.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == record == json.loads((tmp_path / "r.json").read_text())
    assert record["median_ms"] > 0 and record["flops_per_chunk"] > 1e6 and 1e6 < record["params"] <= 3e6
