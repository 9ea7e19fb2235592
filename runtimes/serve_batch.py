"""Batching concurrent /chunk requests of `neat serve` into one forward (runtimes.serve, Ray Serve's @serve.batch).

Each /chunk request carries its own tokens (rows, T) and state; concurrent requests that arrive within the
batch wait are stacked along the batch axis into one Session.run of at most the bundle's batch bound, and the
answer is split back by rows. Row i of a batch-N forward is row i's own forward: on the onnx-fp32 artifact the
results equal Session.run one request at a time bit for bit (tests/runtimes/test_serve.py); a backend whose
kernels change with the batch size may differ in the last float bit.

Batching is on only where it can be: the artifact takes batch > 1 (the manifest's dynamic batch max) and every
input and state tensor has the batch axis first (a state without it would be shared between conversations);
and, unless a max batch is given, where it pays: `pays` times the replica's forward at batch 1 and at the max
when it starts. On CPU a forward's cost grows almost with its rows (the shipped model's onnx-fp32 on one
thread: a batch of 4 costs 0.8-0.9 of 4 forwards of one), and serving it batched was slower end to end
(benchmarks/results/serve_chunk.json); a GPU, typically, runs a small batch in about the time of one row.
A batch that fails (one request's bad tokens, say) is run again one request at a time, so each request gets
its own answer or its own error, the same as without batching. Importing this module needs no Ray.
"""
from __future__ import annotations

import numpy as np

DEFAULT_BATCH_WAIT_MS = 5.0  # how long the first request of a batch waits for others (Ray Serve's batch_wait_timeout_s)
PAYS = 0.6  # batch by default where a forward of n rows costs under this times n forwards of one row


def pays(session, n: int, runs: int = 5) -> bool:
    """Whether one forward of n rows is cheaper than PAYS * n forwards of one (timed here, the fastest of a few
    forwards each: the least disturbed by other work on the machine)."""
    return min(session.latencies(n, runs, warmup=1)) < PAYS * n * min(session.latencies(1, runs, warmup=1))


def batch_limit(signature: dict, requested: int | None) -> int:
    """The most rows one batched forward takes: the artifact's batch max (or `requested`, if smaller);
    1 (no batching) where the artifact is batch-1 only or a tensor has no batch axis."""
    hi = int(signature.get("dynamic", {}).get("batch", {}).get("max", 1))
    tensors = [*signature["inputs"], *signature.get("state", [])]
    if not all(t["shape"] and t["shape"][0] == "batch" for t in tensors):
        return 1
    return max(1, min(hi, requested if requested is not None else hi))


def rows(items: list) -> int:
    """The batch rows of (tokens, state) items: the size @serve.batch packs up to its max_batch_size."""
    return sum(int(tokens.shape[0]) if tokens.ndim else 1 for tokens, _ in items)


def _key(tokens: np.ndarray, state: list[np.ndarray]) -> tuple:
    """Requests that can be stacked: the same shapes past the batch axis and the same dtypes."""
    return (tokens.shape[1:], tokens.dtype.str, tuple((s.shape[1:], s.dtype.str, s.ndim) for s in state))


def _one(session, tokens, state):
    try:
        return (*session.run(tokens, state), int(tokens.shape[0]))
    except Exception as exc:  # given to its own request, raised there
        return exc


def run_batch(session, items: list[tuple[np.ndarray, list[np.ndarray]]]) -> list:
    """(tokens, state) items -> (logits, state, rows of the forward that ran it) or the exception, for each
    item in order. Items that stack are
    run as one forward; a forward that fails is run again item by item, so errors stay with their request."""
    results: list = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, (tokens, state) in enumerate(items):
        groups.setdefault(_key(tokens, state) if tokens.ndim else ("scalar", i), []).append(i)
    for members in groups.values():
        if len(members) > 1:
            try:
                tokens = np.concatenate([items[i][0] for i in members])
                state = [np.concatenate(parts) for parts in zip(*(items[i][1] for i in members))]
                logits, new_state = session.run(tokens, state)
            except Exception:
                pass  # item by item below: each request its own answer or error
            else:
                start = 0
                for i in members:
                    n = items[i][0].shape[0]
                    results[i] = (logits[start:start + n], [s[start:start + n] for s in new_state], len(tokens))
                    start += n
                continue
        for i in members:
            results[i] = _one(session, *items[i])
    return results
