"""A model's further entry points (`ExportSpec.methods`): each captured once, built by every target into
`<artifact>/<method>/`, verified against its own reference like the main forward, and, where the model
decodes incrementally (`ExportSpec.decode`), checked as a whole: stepping one token at a time through the
artifact's methods reproduces the reference chunk forward's outputs over a long real stream."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from exporters.capture import Captured
from exporters.errors import ConversionError
from exporters.spec import ExportSpec
from runtimes.errors import EvaluationUnsupported
from runtimes.manifest import Parity

DECODE_CHUNKS = 4  # chunks of real data stepped through one token at a time (3 chunk ends; 512 bytes for NEAT)
ORDER = ("failed", "not verified", "built, not executed", "passed")  # worst first


@dataclass
class MethodsOutcome:
    parity: dict[str, Parity] = field(default_factory=dict)
    decode: Parity | None = None
    unbuilt: str = ""      # why no method was built (the artifact is written without them)
    build_seconds: float = 0.0

    def verdict(self, main: str) -> str:
        """The artifact's verdict: the worst of the main forward's and every method's."""
        all_ = [main, *(p.verdict for p in self.parity.values())] + ([self.decode.verdict] if self.decode else [])
        return min(all_, key=ORDER.index)

    def notes(self) -> str:
        bad = [f"method {m}: {p.notes}" for m, p in self.parity.items() if p.verdict == "failed"]
        if self.decode is not None and self.decode.verdict == "failed":
            bad.append(f"decode: {self.decode.notes}")
        return "; ".join(bad + ([self.unbuilt] if self.unbuilt else []))


def capture_methods(spec: ExportSpec) -> dict[str, Captured]:
    return {name: Captured(m) for name, m in spec.methods.items()}


def build_methods(target, caps: dict[str, Captured], staged: Path, settings, spec: ExportSpec, precision: str,
                  step) -> MethodsOutcome:
    """Build and verify every method with `target` (a target module) into `staged/<method>`. A method the
    target cannot convert leaves the artifact without methods (generation then recomputes chunks), said in
    `unbuilt`; a method that builds but does not match its reference fails the artifact."""
    requirements, t0 = {}, time.perf_counter()
    for name, cap in caps.items():
        (staged / name).mkdir()
        try:
            with step(f"  method {name}: build"):
                requirements[name] = target.export(cap, staged / name, settings).requirements
        except ConversionError as exc:
            for m in caps:
                _remove(staged / m)
            return MethodsOutcome(unbuilt=f"method {name} not built ({exc}); this artifact decodes by "
                                          "recomputing chunks")
    seconds = time.perf_counter() - t0
    out = check_methods(target, staged, requirements, spec, precision, step)
    out.build_seconds = seconds
    return out


def check_methods(target, artifact_dir: Path, requirements: dict[str, dict], spec: ExportSpec, precision: str,
                  step) -> MethodsOutcome:
    """Verify each method in `requirements` (method -> what running it needs) built under `artifact_dir`, then
    the decode protocol through them when they are all the decode roles and run here."""
    from exporters.build import check

    out, runs = MethodsOutcome(), {}
    for name, needs in requirements.items():
        with step(f"  method {name}: verify"):
            execution = {}
            out.parity[name] = check(spec.methods[name],
                                     lambda: _remember(execution, target.runner(artifact_dir / name, needs)), precision)
        if execution.get("run") is not None:
            runs[name] = execution["run"]
    if spec.decode and set(spec.decode.values()) <= set(runs):
        with step("  decode: step through a long stream against the chunk forward"):
            out.decode = verify_decode(spec, runs, precision, out.parity[spec.decode["step"]].method)
    return out


def _remember(store: dict, execution):
    store["run"] = execution.run
    return execution


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def verify_decode(spec: ExportSpec, runs: dict, precision: str, method: str) -> Parity:
    """Step the artifact's decode methods (runtimes.decode.Decoder, as an app does) through DECODE_CHUNKS chunks
    of real data from the initial state, and compare the scores after every token with the reference chunk
    forward's, as verification compares outputs (masked entries left out, argmax agreement)."""
    from exporters.verify import TOLERANCES, Case, failures, reference_run, tie_margin
    from exporters.parity import compare
    from runtimes.decode import Decoder, gate_inputs

    lo = spec.batch[0]
    chunks = (spec.real_data(lo, DECODE_CHUNKS) if spec.real_data is not None
              else [spec.random_inputs(lo, 4242 + i) for i in range(DECODE_CHUNKS)])
    ref_out, _ = reference_run(spec, Case(f"decode ({lo} x {len(chunks)} chunks)", chunks, lo))
    ref = np.concatenate([o[0] for o in ref_out], axis=1)  # (B, N, V)
    tokens = torch.cat([c[0] for c in chunks], dim=1).numpy()
    n_out = {m: len(s.outputs) for m, s in spec.methods.items()}
    step, gate = spec.methods[spec.decode["step"]], spec.methods.get(spec.decode.get("gate", ""))
    where = gate_inputs([t.name for t in (*step.inputs, *step.state)], [t.name for t in gate.inputs]) if gate else None
    decoder = Decoder(lambda m, arrays: runs[m](*arrays), spec.decode, n_out, period=chunks[0][0].shape[1],
                      gate_inputs=where)
    init = [s.numpy() for s in spec.init_state(lo)]
    tol = TOLERANCES[precision]
    try:
        got = decoder.scores(tokens, init)
    except EvaluationUnsupported:
        raise
    except Exception as exc:  # an artifact that cannot step on valid inputs fails, with the reason
        return Parity(verdict="failed", method=method, tolerance=tol.to_dict(),
                      notes=f"stepping raised {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
    info = spec.outputs[0]
    metrics = compare(ref, got, info.ignore_below, rows=info.name in spec.argmax, tie=tie_margin(precision))
    bad = failures({info.name: metrics}, precision, spec, None)
    case = {"name": f"decode, real data ({lo} x {tokens.shape[1]} tokens, one per call)", "batch": lo,
            "chunks": len(chunks), "tensors": {info.name: metrics},
            "steps": {"full": decoder.full_steps, "light": decoder.light_steps, "commits": decoder.commits}}
    return Parity(verdict="failed" if bad else "passed", method=method, tolerance=tol.to_dict(), cases=[case],
                  worst=metrics, notes="; ".join(bad))
