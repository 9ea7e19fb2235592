"""Verification is part of export, and it blocks: every artifact is run on the same cases as the eager
reference, and every output and every state tensor is compared. A failing artifact fails the export and is
never recorded as passed.

Cases: the user's example inputs and fresh random inputs, at the minimum and maximum batch; real held-out
data when the spec has it; and for a model with state, one long stream (default 64 chunks) with the state
carried on both sides, so that divergence or drift shows. Each side gets its own copy of every input, so a
model that writes into its inputs cannot change what the other side sees.

Per tensor, over all chunks of a case: float tensors by their max abs error relative to the reference's
scale (max(1, max |ref|)) and cosine similarity, outputs declared as scores (`spec.argmax`) also by argmax
agreement, integer and bool tensors exactly. Entries an output declares masked (`ignore_below`) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from exporters.spec import ExportSpec
from runtimes.manifest import Parity
from runtimes.errors import EvaluationUnsupported
from exporters.parity import compare

Runner = Callable[..., Sequence[np.ndarray]]  # (*inputs, *state) as numpy -> (*outputs, *new_state)
CHUNKS = 2            # chunks per random case of a model with state (state carried)
REAL_CHUNKS = 3       # chunks per real-data case
REAL_BATCH = 4


@dataclass(frozen=True)
class Tolerance:
    error: float | None = None          # max abs error / max(1, max |reference|), every float tensor
    cosine: float | None = None         # minimum cosine similarity, every float tensor
    argmax: float | None = None         # minimum argmax agreement, outputs declared as scores
    score_increase: float | None = None  # maximum relative increase of the real-data score (bits per byte)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


TOLERANCES = {
    "fp32": Tolerance(error=1e-4, argmax=1.0),
    "fp16": Tolerance(error=1e-2, cosine=0.999, argmax=0.99),
    "int8": Tolerance(cosine=0.9, score_increase=0.02),
}


@dataclass
class Case:
    name: str
    chunks: list[tuple[torch.Tensor, ...]]
    batch: int


def cases(spec: ExportSpec, seed: int = 1234) -> list[Case]:
    lo, hi = spec.batch
    n = CHUNKS if spec.state else 1
    batches = dict.fromkeys((lo, hi))
    out = [Case(f"example inputs ({b})", [spec.example_chunk(b)] * n, b) for b in batches]
    out += [Case(f"random ({b})", [spec.random_inputs(b, seed + b * 100 + i) for i in range(n)], b) for b in batches]
    if spec.real_data is not None:
        b = min(max(lo, REAL_BATCH), hi)
        out.append(Case(f"real data ({b})", spec.real_data(b, REAL_CHUNKS), b))
    if spec.state and spec.long_stream_chunks:
        k = spec.long_stream_chunks
        if spec.real_data is not None:
            out.append(Case(f"long stream, real data ({lo} x {k} chunks)", spec.real_data(lo, k), lo))
        else:
            stream = [spec.random_inputs(lo, seed + 7919 + i) for i in range(k)]
            out.append(Case(f"long stream, random inputs ({lo} x {k} chunks)", stream, lo))
    return out


def run_chunks(run: Runner, spec: ExportSpec, case: Case) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """(outputs per chunk, state after each chunk), carrying the runner's own state. Every call gets fresh
    copies of its inputs, and what it returns is copied before the next call."""
    n_out = len(spec.outputs)
    state = [s.numpy().copy() for s in spec.init_state(case.batch)]
    outputs, states = [], []
    for inputs in case.chunks:
        outs = [np.array(o, copy=True) for o in run(*[x.numpy().copy() for x in inputs], *[s.copy() for s in state])]
        if len(outs) != n_out + len(state):
            raise ValueError(f"the artifact returned {len(outs)} tensors, the spec has {n_out} outputs and "
                             f"{len(state)} state tensors")
        outputs.append(outs[:n_out])
        state = outs[n_out:]
        states.append(state)
    return outputs, states


def reference_run(spec: ExportSpec, case: Case, reference: Runner | None = None):
    """run_chunks of the reference on `case`, computed once per spec and case (cases are deterministic)."""
    if case.name not in spec.reference_runs:
        spec.reference_runs[case.name] = run_chunks(reference or reference_runner(spec), spec, case)
    return spec.reference_runs[case.name]


def reference_runner(spec: ExportSpec) -> Runner:
    """The module itself, on numpy arrays like an artifact's runner (each call on its own copy of the inputs)."""
    from runtimes.backends.common import torch_runner

    return torch_runner(spec.module.eval(), copy=True)


def tie_margin(precision: str) -> float:
    """Reference top-two margins (relative to the scale) within which argmax may flip at this precision:
    twice its error tolerance (no exemption where the error is not bounded: int8)."""
    err = TOLERANCES[precision].error
    return 2.0 * err if err is not None else 0.0


def compare_tensors(spec: ExportSpec, ref: tuple, got: tuple, precision: str = "fp32") -> dict:
    """{tensor name: metrics} for every output and state tensor, each stacked over the case's chunks."""
    out = {}
    infos = [*spec.outputs, *[replace(t, name=f"new_{t.name}") for t in spec.state]]
    for i, info in enumerate(infos):
        r, g = np.stack([chunk[i] for chunk in ref]), np.stack([chunk[i] for chunk in got])
        if r.shape != g.shape:
            out[info.name] = {"shape": f"{g.shape[1:]} instead of {r.shape[1:]}", "finite": True,
                              "reference_finite": True}
        elif info.dtype in ("bool", "int32", "int64"):
            out[info.name] = {"mismatches": int((r != g).sum()), "finite": True, "reference_finite": True}
        else:
            out[info.name] = compare(r, g, info.ignore_below, rows=info.name in spec.argmax, tie=tie_margin(precision))
    return out


def _merge(per_case: list[dict]) -> dict:
    """The worst of each figure of each tensor over the cases."""
    worst: dict[str, dict] = {}
    better_high = ("cosine", "argmax", "finite", "reference_finite")
    for case in per_case:
        for name, m in case["tensors"].items():
            w = worst.setdefault(name, {})
            for k, v in m.items():
                if k not in w or isinstance(v, str):
                    w[k] = v
                elif isinstance(v, bool):
                    w[k] = w[k] and v
                else:
                    w[k] = min(w[k], v) if k in better_high else max(w[k], v)
    return worst


def tolerance(precision: str, dtype: str) -> Tolerance:
    """The artifact's precision's tolerance, or fp16's for a tensor the model itself keeps in float16."""
    return TOLERANCES["fp16"] if dtype == "float16" and precision == "fp32" else TOLERANCES[precision]


def failures(worst: dict, precision: str, spec: ExportSpec, score: dict | None) -> list[str]:
    out = []
    if not all(m.get("reference_finite", True) for m in worst.values()):
        out.append("the eager reference's own outputs are not finite (the model diverges on these cases)")
    dtypes = {t.name: t.dtype for t in spec.outputs} | {f"new_{t.name}": t.dtype for t in spec.state}
    for name, m in worst.items():
        tol = tolerance(precision, dtypes[name])
        if "shape" in m:
            out.append(f"{name}: shape {m['shape']}")
            continue
        if m.get("mismatches"):
            out.append(f"{name}: {m['mismatches']} entries differ (integer/bool tensors must match exactly)")
        if not m.get("finite", True):
            out.append(f"{name}: non-finite values")
        if tol.error is not None and m.get("error", 0.0) > tol.error:
            out.append(f"{name}: error {m['error']:.3g} > {tol.error:g} (max abs {m['max_abs']:.3g})")
        if tol.cosine is not None and m.get("cosine", 1.0) < tol.cosine:
            out.append(f"{name}: cosine {m['cosine']:.6f} < {tol.cosine:g}")
        if tol.argmax is not None and name in spec.argmax and m.get("argmax", 1.0) < tol.argmax:
            out.append(f"{name}: argmax agreement {m['argmax']:.2%} < {tol.argmax:.0%}")
    tol = TOLERANCES[precision]
    if tol.score_increase is not None and score and score["increase"] > tol.score_increase:
        out.append(f"bits per byte +{score['increase']:.2%} > +{tol.score_increase:.0%}")
    return out


def verify(spec: ExportSpec, run: Runner, precision: str, method: str) -> Parity:
    """Compare a runner with the eager reference on every case; the verdict is passed or failed."""
    tol = TOLERANCES[precision]
    reference = reference_runner(spec)
    per_case, score = [], None
    first = spec.outputs[0].name if spec.outputs else None
    for case in cases(spec):
        ref_out, ref_state = reference_run(spec, case, reference)
        try:
            got_out, got_state = run_chunks(run, spec, case)
        except EvaluationUnsupported:
            raise
        except Exception as exc:  # an artifact that cannot run on valid inputs fails, with the reason
            why = f"case {case.name}: the artifact raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return Parity(verdict="failed", method=method, tolerance=TOLERANCES[precision].to_dict(),
                          cases=per_case, notes=why)
        tensors = compare_tensors(spec, [o + s for o, s in zip(ref_out, ref_state)],
                                  [o + s for o, s in zip(got_out, got_state)], precision)
        per_case.append({"name": case.name, "batch": case.batch, "chunks": len(case.chunks), "tensors": tensors})
        if case.name.startswith("real") and spec.score is not None:
            s_ref = spec.score(case.chunks, [o[0] for o in ref_out])
            s_got = spec.score(case.chunks, [o[0] for o in got_out])
            score = {"reference": s_ref, "artifact": s_got, "increase": (s_got - s_ref) / s_ref}
    worst = {"tensors": _merge(per_case)}
    if first is not None and first in worst["tensors"]:
        worst.update(worst["tensors"][first])  # the first output's figures, flat
    if score:
        worst["bits_per_byte"] = score
    failed = failures(worst["tensors"], precision, spec, score)
    return Parity(verdict="failed" if failed else "passed", method=method, tolerance=tol.to_dict(),
                  cases=per_case, worst=worst, notes="; ".join(failed))
