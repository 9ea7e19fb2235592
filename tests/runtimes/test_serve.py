"""`neat serve` (runtimes.serve) on a real local Ray instance, loopback only: concurrent streams equal
Session.generate run serially, bad input is a 400 with InputError's message and the server keeps serving, the
chunk endpoint carries the state through the client. Ray starts once for the module (about 20 s here)."""
import base64
import http.client
import io
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from runtimes.errors import InputError
from runtimes.serve import BadRequest, chunk_args, generation_args, parse_json
from runtimes.serve_batch import batch_limit, pays, run_batch

N_STREAMS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(rnn_bundle):
    """(port, a local Session of the same bundle): `neat serve`'s start() with 2 replicas on a local Ray."""
    pytest.importorskip("ray.serve", reason='the serve extra: pip install "neat-deploy[serve]"')
    import ray

    import runtimes
    from runtimes.serve import ServeSettings, init_ray, start

    port = _free_port()
    init_ray(num_cpus=2)
    lines = []
    try:
        settings = ServeSettings(replicas=2, threads=1, max_concurrent=16, port=port, max_batch=4)  # batching forced on
        url = start(rnn_bundle, settings, echo=lines.append)
        assert url == f"http://127.0.0.1:{port}" and lines[0].startswith("starting Ray Serve: 2 replica(s)")
        yield port, runtimes.load(rnn_bundle, backend="onnx")
    finally:
        ray.shutdown()  # the local instance, its Serve controller, proxy and replicas with it


def _post(port: int, path: str, body, stream: bool = False, headers: dict | None = None):
    """(status, body bytes, number of reads that brought it); `headers` gets the response's headers (lower case)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body if isinstance(body, bytes) else json.dumps(body),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    if headers is not None:
        headers.update((k.lower(), v) for k, v in r.getheaders())
    if not stream:
        return r.status, r.read(), 1
    parts = []
    while piece := r.read1(65536):  # as they come
        parts.append(piece)
    conn.close()
    return r.status, b"".join(parts), len(parts)


def _request(i: int) -> dict:
    body = {"prompt": f"prompt {i}: " + "xyz"[i % 3] * i, "max_new_bytes": 40 + i}
    return body if i % 2 else {**body, "temperature": 0.9, "top_k": 20, "seed": i}  # greedy and sampled


def test_concurrent_streams_equal_serial_generation(served):
    port, session = served
    with ThreadPoolExecutor(N_STREAMS) as pool:
        got = list(pool.map(lambda i: _post(port, "/stream", _request(i), stream=True), range(N_STREAMS)))
    for i, (status, body, _) in enumerate(got):
        args = generation_args(_request(i))
        assert status == 200 and body == session.generate(**args), i
    assert len({body for _, body, _ in got}) > 1  # the prompts differ, and so do the outputs
    status, body, _ = _post(port, "/generate", _request(3))
    assert status == 200 and body == session.generate(**generation_args(_request(3)))


def test_bad_input_is_a_400_with_the_input_errors_message_and_the_server_keeps_serving(served):
    port, session = served
    for bad, call in (({"prompt": "", "max_new_bytes": 5}, lambda: session.generate(b"", 5)),
                      ({"prompt": "a", "max_new_bytes": -1}, lambda: session.generate(b"a", -1)),
                      ({"prompt": "a", "top_k": 100000}, lambda: session.generate(b"a", top_k=100000))):
        with pytest.raises(InputError) as exc:
            call()
        for path in ("/stream", "/generate"):
            status, body, _ = _post(port, path, bad)
            assert status == 400 and body.decode().strip() == str(exc.value), (path, bad)
    with pytest.raises(InputError) as exc:
        session.run(np.full((1, 8), 300, np.int32), session.new_state(1))
    status, body, _ = _post(port, "/chunk", {"tokens": [[300] * 8]})
    assert status == 400 and body.decode().strip() == str(exc.value)
    assert _post(port, "/chunk", b"{not json")[0] == 400
    assert _post(port, "/stream", {"prompt": "a", "max_tokens": 3})[1].startswith(b"unknown field(s) 'max_tokens'")
    assert _post(port, "/nowhere", {})[0] == 404
    status, body, _ = _post(port, "/stream", _request(1), stream=True)  # still serving
    assert status == 200 and body == session.generate(**generation_args(_request(1)))


def test_the_chunk_endpoint_carries_the_state_through_the_client(served):
    port, session = served
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, (2, 8)).astype(np.int32) for _ in range(3)]
    state, remote = session.new_state(2), None
    for k, tokens in enumerate(chunks):
        logits, state = session.run(tokens, state)
        if k % 2:  # base64 .npy both ways
            buf = io.BytesIO()
            np.save(buf, tokens)
            body = {"tokens": {"npy": base64.b64encode(buf.getvalue()).decode()}, "state": remote, "format": "npy"}
        else:  # JSON lists
            body = {"tokens": tokens.tolist(), "state": remote}
        status, raw, _ = _post(port, "/chunk", body)
        assert status == 200, raw
        answer = json.loads(raw)
        def arr(v):
            return np.load(io.BytesIO(base64.b64decode(v["npy"]))) if isinstance(v, dict) else np.asarray(v, np.float32)
        remote = answer["state"]
        assert np.array_equal(arr(answer["logits"]), logits) and np.array_equal(arr(remote[0]), state[0])


def _chunk_items(k: int) -> list:
    """k (tokens, state) requests of 1 or 2 rows, each with its own state."""
    rng = np.random.default_rng(k)
    return [(rng.integers(0, 256, (1 + i % 2, 8)).astype(np.int32),
             [rng.standard_normal((1 + i % 2, 4)).astype(np.float32)]) for i in range(k)]


def test_concurrent_chunk_requests_are_batched_and_equal_session_run_one_by_one(served):
    port, session = served
    for attempt in range(3):  # until the proxy delivered some of them within one batch wait (the first time, here)
        items = _chunk_items(12 + attempt)

        def send(item):
            headers = {}
            status, raw, _ = _post(port, "/chunk", {"tokens": item[0].tolist(), "state": [item[1][0].tolist()],
                                                    "format": "npy"}, headers=headers)
            assert status == 200, raw
            return json.loads(raw), int(headers["x-neat-batch"]), headers["x-neat-artifact"]

        with ThreadPoolExecutor(len(items)) as pool:
            got = list(pool.map(send, items))
        for (tokens, state), (answer, _, artifact) in zip(items, got):
            logits, new_state = session.run(tokens, state)  # one by one, batch = the request's rows
            assert artifact == session.backend.key  # both onnx-fp32: the answers are equal to the bit
            arr = [np.load(io.BytesIO(base64.b64decode(v["npy"]))) for v in (answer["logits"], *answer["state"])]
            assert np.array_equal(arr[0], logits) and np.array_equal(arr[1], new_state[0])
        if max(n for _, n, _ in got) > 2:  # a forward of more rows than any one request
            break
    else:
        pytest.fail("no two /chunk requests were batched in 3 rounds of 12 concurrent requests")


def test_batching_without_ray(rnn_bundle):
    import runtimes

    session = runtimes.load(rnn_bundle, backend="onnx")
    good = _chunk_items(3)  # 1, 2 and 1 rows: one forward of 4 (the bundle's batch max)
    bad = (np.full((1, 8), 300, np.int32), good[0][1])  # out of the tokens' range
    odd = (good[0][0][:, :4], good[0][1])                # another shape: not stacked with the others
    cases = ((good, [4, 4, 4]), ([good[0], bad, good[2]], [1, None, 1]), ([good[0], odd, good[2]], [2, None, 2]))
    for items, rows in cases:
        results = run_batch(session, items)  # a failed forward is run again one by one: errors stay with their request
        for (tokens, state), result, n in zip(items, results, rows):
            if n is None:
                with pytest.raises(InputError) as exc:
                    session.run(tokens, state)
                assert isinstance(result, InputError) and str(result) == str(exc.value)
                continue
            logits, new_state = session.run(tokens, state)
            assert np.array_equal(result[0], logits) and np.array_equal(result[1][0], new_state[0]) and result[2] == n
    assert pays(session, 4)  # the tiny model: a forward of 4 rows costs about one of 1 (the call's overhead)
    sig = session.manifest.signature
    assert batch_limit(sig, None) == 4 and batch_limit(sig, 2) == 2 and batch_limit(sig, 99) == 4
    assert batch_limit({**sig, "dynamic": {}}, None) == 1  # a batch-1 artifact: off
    unbatched_state = {**sig, "state": [{**sig["state"][0], "shape": [4]}]}
    assert batch_limit(unbatched_state, None) == 1         # a state shared by all rows: off


def test_request_decoding_without_ray():
    with pytest.raises(BadRequest, match="not JSON"):
        parse_json(b"[1,")
    with pytest.raises(BadRequest, match="one of them"):
        generation_args({"prompt": "a", "prompt_base64": "YQ=="})
    assert generation_args({"prompt_base64": "AP8="})["prompt"] == b"\x00\xff"
    with pytest.raises(BadRequest, match="at most"):
        generation_args({"prompt": "a", "max_new_bytes": 10**9})
    sig = {"inputs": [{"name": "tokens", "dtype": "int32", "shape": ["batch", 8]}],
           "state": [{"name": "h", "dtype": "float32", "shape": ["batch", 4]}]}
    with pytest.raises(BadRequest, match="non-integers"):
        chunk_args({"tokens": [[0.5] * 8]}, sig)
    with pytest.raises(BadRequest, match="expected 1 state tensors"):
        chunk_args({"tokens": [[0] * 8], "state": []}, sig)
    tokens, state, fmt = chunk_args({"tokens": [[1] * 8], "state": [[[0, 1, 2, 3]]]}, sig)
    assert tokens.dtype == np.int32 and state[0].dtype == np.float32 and fmt == "json"


def test_importing_the_runtimes_and_the_serve_module_needs_no_ray():
    code = "import sys, runtimes, runtimes.serve; sys.exit('ray' in sys.modules or 'starlette' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=".").returncode == 0


def test_a_replica_killed_mid_stream_is_an_error_to_its_client_and_the_deployment_recovers(served):
    # last in the module: it waits (at most 60 s; about 12 s here) for Serve's replacement of the killed replica
    import ray

    port, session = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/stream", json.dumps({"prompt": "long", "max_new_bytes": 65536}))
    r = conn.getresponse()
    assert r.status == 200 and r.read1(65536)  # streaming has begun
    victim = r.getheader("X-Neat-Replica")
    (actor,) = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith("#" + victim)]
    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
    with pytest.raises(http.client.IncompleteRead):  # never a clean end of a truncated stream
        while r.read1(65536):
            pass
    expected = session.generate(**generation_args(_request(5)))

    def generate() -> str:
        headers = {}
        status, body, _ = _post(port, "/generate", _request(5), headers=headers)
        assert status == 200 and body == expected
        return headers["x-neat-replica"]

    survivors = {generate() for _ in range(4)}  # the other replica answers at once, and correctly
    assert len(survivors) == 1 and victim not in survivors
    deadline, new = time.monotonic() + 60, None
    while new is None and time.monotonic() < deadline:  # until a new replica serves (requests go to both)
        new = next(iter({generate() for _ in range(4)} - survivors - {victim}), None)
        time.sleep(0.5)
    assert new is not None, "Serve did not replace the killed replica within 60 s"
