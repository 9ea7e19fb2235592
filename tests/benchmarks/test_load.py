"""neat bench --load: the busy jobs stop by themselves, and the study reports idle and loaded side by side
(smoke: few runs, no timing thresholds; the committed record is benchmarks/results/load.json)."""
import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from benchmarks import busy
from benchmarks.loaded import bars, markdown, parse_profiles, records_of, study


def test_every_profile_names_its_jobs_and_an_unknown_one_is_refused():
    assert busy.jobs("workers", 3) == ["app"] * 3 and busy.jobs("crowded", 2) == ["compile", "numpy_blas"]
    assert set(busy.PROFILES) == {"workers", *busy.MIXES} and busy.jobs("mixed", 8) == ["compile"]
    with pytest.raises(busy.LoadUnavailable, match="unknown load profile 'busy'; choose one of workers, mixed, crowded"):
        busy.jobs("busy", 2)


def test_a_busy_job_stops_at_its_deadline_by_itself():
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", busy.JOBS["numpy_blas"], "1.0", "-"], timeout=120)
    assert res.returncode == 0 and time.perf_counter() - t0 < 60


def test_the_study_reports_idle_and_loaded_for_each_setting(neat_bundle, tmp_path):
    out, res = neat_bundle
    assert res.exit_code == 0, res.output
    record = study(out, "workers", runs=3, generate_bytes=8, keys=["onnx-fp32"], settings=[None, 2])
    assert record["jobs"] == ["app"] * record["usable_cores"] and record["chosen"] == "cpu-fp32"
    labels = [(r["artifact"], r["threads"]) for r in record["rows"]]
    assert labels == [("onnx-fp32", None), ("onnx-fp32", 2)]
    for r in record["rows"]:
        for cond in ("idle", "loaded"):
            assert r[cond]["chunk_p99_ms"] >= r[cond]["chunk_p50_ms"] > 0 and r[cond]["bytes_per_s"] > 0
            assert 0 < r[cond]["cpu_share"] <= (r["threads"] or 1) + 0.5  # CPU time over wall, per thread
        assert r["cpu_efficiency"] == pytest.approx(
            r["gen_ratio"] * r["idle"]["cpu_share"] / r["loaded"]["cpu_share"])
    assert bars(record)[0] == {"bar": "the pick was measured", "met": False,
                               "figure": "cpu-fp32 not among the rows"}
    record["chosen"] = "onnx-fp32"
    judged = bars(record)
    assert [b["bar"] for b in judged][:2] == ["loaded generation >= 0.5x idle", "loaded chunk p99 <= 3.0x idle p99"]
    assert judged[-1]["met"]  # the same argmax ids on every setting, idle and loaded
    assert judged[0]["detail"].startswith("its share of a core ")
    text = markdown({**record, "bars": judged})
    assert "| onnx-fp32 | policy (" in text and "idle / loaded" in text


def test_the_command_refuses_load_with_a_stored_record(tmp_path):
    from neat.cli import main

    rec = tmp_path / "r.json"
    rec.write_text(json.dumps({"benchmark": "neat-bench", "artifacts": []}))
    res = CliRunner().invoke(main, ["bench", "--load", "mixed", "--record", str(rec)])
    assert res.exit_code == 2 and "--load measures on its own" in res.output


def test_load_takes_several_profiles_or_all_and_names_a_wrong_one():
    from neat.cli import main

    assert parse_profiles("all") == list(busy.PROFILES) == ["workers", "mixed", "crowded", "heavy"]
    assert parse_profiles("mixed, workers,mixed") == ["mixed", "workers"]
    res = CliRunner().invoke(main, ["bench", "--load", "workers,busy"])
    assert res.exit_code == 2 and "unknown load profile 'busy'; give one of workers, mixed, crowded, heavy" in res.output
    one = {"benchmark": "neat-bench-load", "profile": "mixed"}
    assert records_of(one) == [one] and records_of({"profiles": [one, one]}) == [one, one]


def test_the_load_is_on_only_once_every_job_has_done_an_iteration():
    slow = busy.GUARD + "time.sleep(1.5)\nwhile running():\n    time.sleep(0.1)\n"  # a slow start, then steady
    procs = [subprocess.Popen([sys.executable, "-c", slow, "30", "-"], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    t0 = time.perf_counter()
    try:
        busy._wait_ready("test", ["slow", "slow"], procs, 60)
        assert time.perf_counter() - t0 >= 1.5 and all(p.poll() is None for p in procs)
    finally:
        for p in procs:
            p.kill()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], stdout=subprocess.PIPE, text=True)
    with pytest.raises(busy.LoadUnavailable, match="load job.s. broken exited before their first iteration"):
        busy._wait_ready("mixed", ["broken"], [dead], 60)
