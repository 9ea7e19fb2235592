"""Where a stateful artifact starts to drift along a long stream, for exporters.explain.

The reference (the eager module) and the artifact each run the verifier's long stream chunk by chunk, each
carrying its own state (the artifact's new state into the artifact, the reference's into the reference), as
verification runs them. The error of every output and state tensor is taken per chunk (how it grows), and at
the first chunk where one leaves the tolerance both sides are run op by op on the SAME inputs, the
reference's state at that chunk: an op whose error leaves the tolerance there is what amplifies (named first,
with its source line). When nothing leaves it on equal inputs, the drift is accumulation over chunks: the
state whose error grows fastest is named, and the ops whose one-chunk error feeds it most.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHOWN = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # chunks at which the growth is printed (and the first failing one)


@dataclass
class Stream:
    chunks: int
    names: list[str]                                     # outputs, then new_<state>
    errors: list[list[float]] = field(default_factory=list)  # per chunk, per name (relative to the reference's scale)
    first_bad: int | None = None                         # 1-based chunk where an error first leaves tolerance
    amplifies: bool = False                               # an op leaves tolerance on equal inputs at first_bad
    accumulating: str = ""                                # the state whose error grows fastest, when none does
    divergences: list = field(default_factory=list)       # explain.Divergence, first first
    tolerance: float = 0.0

    def growth(self, name: str) -> list[float]:
        return [row[self.names.index(name)] for row in self.errors]

    def __str__(self) -> str:
        at = sorted({k for k in SHOWN if k <= self.chunks} | {self.chunks} | ({self.first_bad} if self.first_bad else set()))
        lines = [f"  stream of {self.chunks} chunks, each side carrying its own state; error per chunk:"]
        for i, name in enumerate(self.names):
            lines.append(f"    {name}: " + ", ".join(f"{k}: {self.errors[k - 1][i]:.3g}" for k in at))
        if self.first_bad is None:
            lines.append(f"  every tensor within tolerance {self.tolerance:g} on every chunk")
            return "\n".join(lines)
        lines.append(f"  first out of tolerance at chunk {self.first_bad}; there, on the reference's state:")
        if self.amplifies:
            lines.append("  an op leaves tolerance on equal inputs (it amplifies the state's error):")
        else:
            lines.append(f"  no op leaves tolerance on equal inputs: the error accumulates over chunks; "
                         f"{self.accumulating} grows fastest, fed most by:")
        lines += [f"    {i}. {d}" for i, d in enumerate(self.divergences, 1)]
        return "\n".join(lines)


def artifact_runner(kind: str, path):
    """run(*arrays) -> (*outputs, *new_state) of the artifact, loaded once."""
    if kind == "coreml":
        from exporters import coreml_numpy

        return coreml_numpy.load(path)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins, outs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    return lambda *arrays: session.run(outs, dict(zip(ins, arrays)))


def _ancestors(program, index: int) -> set[str]:
    """Names of the nodes the program's `index`-th output is computed from (itself included)."""
    out = program.graph.output_node().args[0][index]
    seen, todo = set(), [out]
    while todo:
        n = todo.pop()
        if n.name not in seen:
            seen.add(n.name)
            todo.extend(n.all_input_nodes)
    return seen


def explain_stream(cap, kind: str, path, tol: float, first: int) -> Stream:
    """The error of every output and state along the verifier's long stream, and where it starts."""
    import torch

    from exporters.explain import _error, localise_at
    from exporters.verify import cases, reference_run, run_chunks

    spec = cap.spec
    case = next(c for c in cases(spec) if c.name.startswith("long stream"))
    _, names = spec.names
    ref_out, ref_state = reference_run(spec, case)
    got_out, got_state = run_chunks(artifact_runner(kind, path), spec, case)
    report = Stream(len(case.chunks), list(names), tolerance=tol)
    for ro, rs, go, gs in zip(ref_out, ref_state, got_out, got_state):
        report.errors.append([e if (e := _error(r, g)) is not None else float("inf") for r, g in zip(ro + rs, go + gs)])
    bad = [k for k, row in enumerate(report.errors) if max(row) > tol]
    if not bad:
        return report
    k = bad[0]
    report.first_bad = k + 1
    state = [s.numpy() for s in spec.init_state(case.batch)] if k == 0 else ref_state[k - 1]
    inputs = (*case.chunks[k], *(torch.from_numpy(np.array(s, copy=True)) for s in state))
    _, found, _ = localise_at(cap, kind, path, inputs, tol, first)
    report.amplifies = bool(found)  # on equal inputs every value read is exact at first: any op found amplifies
    if report.amplifies:
        report.divergences = found
        return report
    # accumulation: the state whose error grows fastest (over its first chunk's), and what feeds it per chunk
    n_out = len(spec.outputs)
    rate = {n: report.errors[k][i] / max(report.errors[0][i], 1e-12) for i, n in enumerate(names) if i >= n_out}
    if not rate:
        return report
    report.accumulating = max(rate, key=rate.get)
    index = list(names).index(report.accumulating)
    feeds = lambda p: _ancestors(p, index)  # noqa: E731
    _, _, one_chunk = localise_at(cap, kind, path, inputs, float("inf"), first, only=feeds)
    if one_chunk > 0:  # the ops that first carry half of the state's one-chunk error
        report.divergences = localise_at(cap, kind, path, inputs, one_chunk / 2, first, only=feeds)[1]
    return report
