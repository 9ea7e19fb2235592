"""The thread policy (runtimes.threads): where the counts come from, and that each backend applies them."""
import numpy as np
import pytest
import torch

import runtimes
from runtimes import threads as policy
from runtimes.errors import InputError


def test_explicit_threads_win_over_the_environment_and_the_policy(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    t = policy.plan(2)
    assert (t.chunk, t.step, t.why) == (2, 2, "threads=2")
    t = policy.plan()
    assert (t.chunk, t.step, t.why) == (3, 3, "OMP_NUM_THREADS=3")


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2", 10**6])
def test_a_bad_thread_count_is_an_input_error_naming_it(bad):
    with pytest.raises(InputError, match="threads must be a whole number of threads from 1 to 1024"):
        policy.plan(bad)


def test_a_bad_omp_num_threads_names_the_variable(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "four")
    with pytest.raises(InputError, match="OMP_NUM_THREADS must be a whole number, got 'four'"):
        policy.plan()


@pytest.mark.parametrize("cores, chunk", [(1, 1), (2, 1), (7, 1), (8, 2), (16, 4), (128, 4)])
def test_the_policy_keeps_steps_on_one_thread_and_chunks_on_a_quarter_of_the_cores(monkeypatch, cores, chunk):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(policy, "usable_cores", lambda: (cores, f"affinity {cores}"))
    t = policy.plan()
    assert (t.chunk, t.step) == (chunk, 1) and f"{cores} usable cores" in t.why
    assert t.for_method(None) == t.for_method("forward") == chunk and t.for_method("byte_step") == 1


@pytest.mark.parametrize("text, cores", [("max 100000\n", None), ("150000 100000\n", 1.5), ("50000 100000", 0.5),
                                         ("garbage", None)])
def test_the_cgroup_v2_quota_is_read_in_cores(tmp_path, monkeypatch, text, cores):
    (tmp_path / "cpu.max").write_text(text)
    monkeypatch.setattr(policy, "CGROUP_V2", tmp_path / "cpu.max")
    assert policy.cgroup_quota() == cores


def test_usable_cores_are_the_affinity_capped_by_the_quota(tmp_path, monkeypatch):
    import os

    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: still one thread
    monkeypatch.setattr(policy, "CGROUP_V2", tmp_path / "cpu.max")
    cores, where = policy.usable_cores()
    assert cores == 1 and "cgroup quota 0.5" in where
    monkeypatch.setattr(policy, "CGROUP_V2", tmp_path / "none")
    monkeypatch.setattr(policy, "CGROUP_V1", (tmp_path / "none", tmp_path / "none"))
    assert policy.usable_cores()[0] == len(os.sched_getaffinity(0))


def test_each_backend_runs_on_the_counts_of_its_session(neat_bundle):
    """ONNX Runtime gets them as session options (nothing global); torch sessions set torch's per-process
    count before each call; a decode method runs on the step count."""
    out, res = neat_bundle
    assert res.exit_code == 0, res.output
    before = torch.get_num_threads()
    try:
        onnx = runtimes.load(out, backend="onnx-fp32", threads=2)
        assert (onnx.threads.chunk, onnx.threads.step) == (2, 2)
        assert onnx._run.session.get_session_options().intra_op_num_threads == 2
        cpu = runtimes.load(out, backend="cpu-fp32", threads=3)
        torch.set_num_threads(1)
        cpu.run(np.zeros((1, cpu.manifest.signature["inputs"][0]["shape"][1]), np.int32), cpu.new_state(1))
        assert torch.get_num_threads() == 3
        default = runtimes.load(out, backend="cpu-fp32")
        assert default.threads == policy.plan() and default.threads.step == 1
        assert default.decoding == "step" and default.generate(b"The ", 3) is not None
        assert torch.get_num_threads() == policy.plan().step  # the last call was a decode step
    finally:
        torch.set_num_threads(before)
