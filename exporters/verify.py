"""Verification is part of export, and it blocks: every artifact is run on the same cases as the eager
reference and compared. A failing artifact fails the export and is never recorded as passed.

Cases: fresh random inputs at the minimum and maximum batch, real held-out data, each as several chunks
with the state carried (each side carries its own state, so errors that accumulate are caught), and, when
the spec asks for it, one long real stream (e.g. 64 chunks) so that divergence or drift is caught.
Metrics are over the first output (logits), ignoring entries the reference masks out (<= mask_below):
max abs error, max relative error, cosine similarity, argmax agreement; plus the final state's max abs error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from exporters.spec import ExportSpec
from runtimes.bundle import Parity
from runtimes.parity import compare

Runner = Callable[..., Sequence[np.ndarray]]  # (*inputs, *state) as numpy -> (*outputs, *new_state)
CHUNKS = 2            # chunks per random case (state carried)
REAL_CHUNKS = 3       # chunks per real-data case
REAL_BATCH = 4


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None = None        # on logits
    cosine: float | None = None         # minimum
    argmax: float = 1.0                 # minimum agreement
    score_increase: float | None = None  # maximum relative increase of the real-data score (bits per byte)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-4, argmax=1.0),
    "fp16": Tolerance(cosine=0.999, argmax=0.99),
    "int8": Tolerance(argmax=0.0, score_increase=0.02),
}


@dataclass
class Case:
    name: str
    chunks: list[tuple[torch.Tensor, ...]]

    @property
    def batch(self) -> int:
        return self.chunks[0][0].shape[0]


def cases(spec: ExportSpec, seed: int = 1234) -> list[Case]:
    lo, hi = spec.batch
    out = []
    for label, b in (("random, min batch", lo), ("random, max batch", hi)):
        if out and b == lo:
            continue
        out.append(Case(f"{label} ({b})", [spec.random_inputs(b, seed + i) for i in range(CHUNKS)]))
    if spec.real_data is not None:
        b = min(max(lo, REAL_BATCH), hi)
        out.append(Case(f"real data ({b})", spec.real_data(b, REAL_CHUNKS)))
        if spec.long_stream_chunks:
            n = spec.long_stream_chunks
            out.append(Case(f"long stream, real data ({lo} x {n} chunks)", spec.real_data(lo, n)))
    return out


def run_chunks(run: Runner, spec: ExportSpec, case: Case) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(first output per chunk, final state), carrying the runner's own state."""
    n_out = len(spec.outputs)
    state = [s.numpy() for s in spec.init_state(case.batch)]
    firsts = []
    for inputs in case.chunks:
        outs = run(*[x.numpy() for x in inputs], *state)
        firsts.append(np.asarray(outs[0], dtype=np.float32))
        state = [np.asarray(s) for s in outs[n_out:]]
    return firsts, state


def reference_runner(spec: ExportSpec) -> Runner:
    module = spec.module.eval()

    @torch.no_grad()
    def run(*arrays):
        return [t.numpy() for t in module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])]

    return run


def _worst(per_case: list[dict]) -> dict:
    return {
        "max_abs": max(c["max_abs"] for c in per_case),
        "max_rel": max(c["max_rel"] for c in per_case),
        "cosine": min(c["cosine"] for c in per_case),
        "argmax": min(c["argmax"] for c in per_case),
        "finite": all(c["finite"] for c in per_case),
        "reference_finite": all(c["reference_finite"] for c in per_case),
        "state_max_abs": max(c["state_max_abs"] for c in per_case),
    }


def failures(worst: dict, tol: Tolerance, score: dict | None) -> list[str]:
    out = []
    if not worst["reference_finite"]:
        out.append("the eager reference's own outputs are not finite (the model diverges on these cases)")
    if not worst["finite"]:
        out.append("non-finite outputs")
    if tol.max_abs is not None and worst["max_abs"] > tol.max_abs:
        out.append(f"max abs error {worst['max_abs']:.3g} > {tol.max_abs:g}")
    if tol.cosine is not None and worst["cosine"] < tol.cosine:
        out.append(f"cosine {worst['cosine']:.6f} < {tol.cosine:g}")
    if worst["argmax"] < tol.argmax:
        out.append(f"argmax agreement {worst['argmax']:.2%} < {tol.argmax:.0%}")
    if tol.score_increase is not None and score and score["increase"] > tol.score_increase:
        out.append(f"bits per byte +{score['increase']:.2%} > +{tol.score_increase:.0%}")
    return out


def verify(spec: ExportSpec, run: Runner, precision: str, method: str) -> Parity:
    """Compare a runner with the eager reference on every case; the verdict is passed or failed."""
    tol = TOLERANCES[precision]
    reference = reference_runner(spec)
    per_case, score = [], None
    for case in cases(spec):
        ref_out, ref_state = run_chunks(reference, spec, case)
        got_out, got_state = run_chunks(run, spec, case)
        metrics = compare(np.stack(ref_out), np.stack(got_out))
        metrics["state_max_abs"] = max(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
                                       for a, b in zip(ref_state, got_state))
        per_case.append({"name": case.name, "batch": case.batch, "chunks": len(case.chunks), **metrics})
        if case.name.startswith("real") and spec.score is not None:
            s_ref, s_got = spec.score(case.chunks, ref_out), spec.score(case.chunks, got_out)
            score = {"reference": s_ref, "artifact": s_got, "increase": (s_got - s_ref) / s_ref}
    worst = _worst(per_case)
    if score:
        worst["bits_per_byte"] = score
    failed = failures(worst, tol, score)
    return Parity(verdict="failed" if failed else "passed", method=method, tolerance=tol.to_dict(),
                  cases=per_case, worst=worst, notes="; ".join(failed))
