"""Ranking a bundle's artifacts for a machine, checking each candidate's requirements from the manifest
before loading it, and falling back along the chain, recording why each candidate was skipped."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtimes import backends
from runtimes.bundle import Artifact, Manifest, file_problems
from runtimes.decode import decoding
from runtimes.errors import BackendUnavailable
from runtimes.profile import HardwareProfile

PREFERENCE = {  # first that works wins
    "nvidia": ("tensorrt", "cuda", "onnx", "cpu", "exported", "eager"),
    "apple": ("coreml", "mlx", "cpu", "onnx", "exported", "eager"),
    "cpu": ("cpu", "onnx", "openvino", "executorch", "mlx", "exported", "eager"),
}
PRECISION_ORDER = {"cpu": ("fp32", "fp16", "int8"), "nvidia": ("fp16", "fp32", "int8"), "apple": ("fp16", "fp32", "int8")}
EAGER = "eager"


@dataclass
class Candidate:
    key: str                     # artifact key, or "eager"
    target: str
    usable: bool                 # can run on this machine (requirements met, files intact)
    reason: str                  # why it can run here, or why not
    preferred: bool = True       # in this kind of machine's preference order (automatic choice needs it)


def requirement_problem(art: Artifact, profile: HardwareProfile) -> str:
    """Why this artifact cannot run on this machine ('' when it can), from the manifest alone: its own
    backend decides (runtimes.backends)."""
    if art.parity.verdict == "failed":
        return "failed verification at export"
    try:
        backend = backends.get(art.target)
    except BackendUnavailable as exc:
        return str(exc)
    return backend.problem(art.requirements, profile)


def eager_requirements(manifest: Manifest) -> dict:
    """What the eager backend needs from the manifest: the name of the installed reference loader."""
    return {"loader": manifest.model.get("reference_loader", "")}


def rank(manifest: Manifest, profile: HardwareProfile, bundle: Path | None = None) -> list[Candidate]:
    """Every artifact (and the eager reference) in preference order for this profile, with a verdict each."""
    order = PREFERENCE[profile.kind]
    precisions = PRECISION_ORDER[profile.kind]

    def sort_key(item):
        key, art = item
        pos = order.index(art.target) if art.target in order else len(order)
        prec = precisions.index(art.precision) if art.precision in precisions else len(precisions)
        return pos, art.parity.verdict == "not verified", prec, key

    out = []
    for key, art in sorted(manifest.artifacts.items(), key=sort_key):
        generation = "" if "decode" not in manifest.signature else (
            ", generates by stepping" if decoding(manifest.signature, art.methods) == "step" else
            ", generates by recomputing chunks (no decode methods)")
        problem = requirement_problem(art, profile)
        if not problem and bundle is not None:
            bad = file_problems(bundle, art)
            problem = ("integrity: " + "; ".join(bad)) if bad else ""
        preferred = art.target in order
        reason = problem or (f"{art.target} {art.precision}, verification {art.parity.verdict}{generation}"
                             if preferred else f"runs here, but not used on {profile.kind} machines unless asked for")
        out.append(Candidate(key, art.target, not problem, reason, preferred))
    if "reference" in manifest.model:
        why = backends.get(EAGER).problem(eager_requirements(manifest), profile)
        out.append(Candidate(EAGER, EAGER, not why, why or "the PyTorch reference (last resort)"))
    else:
        out.append(Candidate(EAGER, EAGER, False, "the bundle carries no reference weights"))
    return out
