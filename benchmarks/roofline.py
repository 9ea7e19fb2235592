"""How close an artifact comes to this machine's limits, measured in the same run as the benchmark.

Machine: the peak matrix-multiply rate (best of several large fp32 matmuls through PyTorch's BLAS) and the
memory bandwidth (best of several copies of a buffer far larger than the
caches, counting the bytes read and written), with the threads the artifacts run with.
Model: FLOPs per chunk (PyTorch's FlopCounterMode over one eager forward at batch 1: matmuls and attention)
and the fewest bytes a chunk must move: every dense weight once at the artifact's precision, the
embedding rows it gathers, the state read and written, the tokens in and the logits out.
An artifact's fraction of the limit is the roofline bound max(FLOPs / peak, bytes / bandwidth) divided by its
measured median latency: 100% would be a chunk as fast as this machine can possibly run it. fp16 and int8
artifacts are held to the fp32 matmul peak too (the CPU's own low-precision rate is not measured), so
their share reads high. Only artifacts that run on the CPU get one: the limits measured are the CPU's.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}
MATMUL_N = 2048
COPY_BYTES = 256 * 2**20


def _best(fn, repeats: int) -> float:
    fn()  # warm-up: page faults, thread pool start
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_machine(repeats: int = 5) -> dict:
    """{'matmul_flops_s', 'bandwidth_bytes_s', ...} for this machine, now (PyTorch's BLAS and threads)."""
    import torch

    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    src, dst = torch.ones(COPY_BYTES // 4), torch.empty(COPY_BYTES // 4)
    return {"matmul_flops_s": 2 * MATMUL_N**3 / _best(lambda: torch.mm(a, b), repeats),
            "bandwidth_bytes_s": 2 * COPY_BYTES / _best(lambda: dst.copy_(src), repeats),
            "matmul": f"fp32 {MATMUL_N}x{MATMUL_N} @ {MATMUL_N}x{MATMUL_N}", "copy_bytes": COPY_BYTES,
            "library": f"torch {torch.__version__}", "threads": torch.get_num_threads()}


def best_of(*measured: dict) -> dict:
    """The highest rate and bandwidth of several measurements (taken before and after the artifacts ran, so
    that a moment of interference on a shared machine does not pass for the machine's limit)."""
    out = dict(measured[0])
    out["matmul_flops_s"] = max(m["matmul_flops_s"] for m in measured)
    out["bandwidth_bytes_s"] = max(m["bandwidth_bytes_s"] for m in measured)
    return out


def measure_work(weights: Path, state: list[np.ndarray], chunk_len: int, vocab: int) -> dict:
    """FLOPs per chunk and the fewest bytes a chunk moves, per weight precision, for the reference model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from neat.checkpoint import load_checkpoint

    model = load_checkpoint(weights).eval()
    tokens = torch.zeros((1, chunk_len), dtype=torch.int32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(tokens, *[torch.from_numpy(s) for s in state])
    tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    table_ids = {id(m.weight) for m in tables}
    dense = sum(p.numel() for p in model.parameters() if id(p) not in table_ids)
    dense += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    fixed = (chunk_len * sum(m.embedding_dim for m in tables) * 4         # gathered embedding rows, fp32
             + 2 * sum(s.nbytes for s in state)                            # state in and out
             + chunk_len * 4 + chunk_len * vocab * 4)                      # tokens in, logits out
    return {"flops": int(counter.get_total_flops()), "dense_weights": dense,
            "bytes": {p: dense * n + fixed for p, n in BYTES_PER_WEIGHT.items()}}


def fraction(work: dict, machine: dict, precision: str, seconds: float) -> dict:
    """What one chunk in `seconds` achieves, and the share of the roofline bound that is."""
    moved = work["bytes"].get(precision, work["bytes"]["fp32"])
    bound = max(work["flops"] / machine["matmul_flops_s"], moved / machine["bandwidth_bytes_s"])
    return {"gflops_s": work["flops"] / seconds / 1e9, "gbytes_s": moved / seconds / 1e9,
            "bound_ms": bound * 1e3, "limit_fraction": bound / seconds,
            "bound_by": "compute" if work["flops"] / machine["matmul_flops_s"] >= moved / machine["bandwidth_bytes_s"]
            else "memory"}


class _Reads:
    """A dispatch mode that adds up the bytes of every tensor an op reads which no op of the current step made
    (weights, the step's inputs), each storage once per step, and of an embedding table only the rows
    gathered. `next_step()` starts a step."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        reads = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                reads.saw(func, args, kwargs or {})
                out = func(*args, **(kwargs or {}))
                reads.made(out)
                return out

        self.mode, self.total = Mode(), 0
        self.next_step()

    def next_step(self) -> None:
        self.read, self.produced = set(), set()

    def saw(self, func, args, kwargs) -> None:
        import torch

        if func is torch.ops.aten.embedding.default:  # (table, indices): only the gathered rows
            table, idx = args[0], args[1]
            self.total += idx.numel() * table.shape[-1] * table.element_size()
            args = args[1:]
        for a in torch.utils._pytree.tree_leaves((args, kwargs)):
            if isinstance(a, torch.Tensor):
                key = a.untyped_storage().data_ptr()
                if key not in self.produced and key not in self.read:
                    self.read.add(key)
                    self.total += a.untyped_storage().nbytes()

    def made(self, out) -> None:
        import torch

        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.read:
                self.produced.add(t.untyped_storage().data_ptr())

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def measure_step_work(session, prompt: list[int], n: int, follow: list[int] | None = None) -> dict:
    """FLOPs and the fewest bytes moved per generated byte by stepping, for fp32 artifacts: the eager
    reference `session` generates n bytes after `prompt`, greedily or stepping through `follow` (its first n
    ids; prefill and prompt steps not counted);
    matmul/attention FLOPs (FlopCounterMode) and every tensor a step reads that it did not make itself (the
    weights it uses, the state it reads) once, an embedding table by the rows gathered only, plus the new
    state and the scores it writes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from runtimes.generate import prefill

    state, last, rest = prefill(session, list(prompt))
    decoder = session.decoder()
    state = decoder.enter(state)
    for b in rest:
        scores, state = decoder.step(np.asarray([[b]], np.int32), state)
        last = scores[0]
    written, decoder.full_steps, decoder.light_steps = 0, 0, 0
    with torch.no_grad(), FlopCounterMode(display=False) as counter, _Reads() as reads:
        for i in range(n):
            reads.next_step()
            nxt = int(last.argmax()) if follow is None else follow[i]
            scores, state = decoder.step(np.asarray([[nxt]], np.int32), state)
            last = scores[0]
            written += scores.nbytes + sum(s.nbytes for s in state)
    return {"flops": counter.get_total_flops() / n, "bytes": {"fp32": (reads.total + written) / n}, "steps": n,
            "full_steps": decoder.full_steps, "light_steps": decoder.light_steps}
