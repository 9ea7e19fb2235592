"""Ranking a bundle's artifacts for a machine, checking each candidate's requirements from the manifest
before loading it, and falling back along the chain, recording why each candidate was skipped."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtimes.bundle import Artifact, Manifest, file_problems
from runtimes.profile import HardwareProfile

PREFERENCE = {  # first that works wins
    "nvidia": ("tensorrt", "cuda", "onnx", "cpu", "exported", "eager"),
    "apple": ("coreml", "cpu", "onnx", "exported", "eager"),
    "cpu": ("cpu", "onnx", "exported", "eager"),
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
    """Why this artifact cannot run on this machine ('' when it can), from the manifest alone."""
    req, libs, t = art.requirements, profile.libraries, art.target
    if art.parity.verdict == "failed":
        return "failed verification at export"
    if t == "exported":
        return "" if "torch" in libs else "PyTorch is not installed"
    if t == "onnx":
        return "" if "onnxruntime" in libs else 'onnxruntime is not installed: pip install "neat-deploy[onnx]"'
    if t in ("cpu", "cuda"):
        if "aoti" not in libs:
            return "PyTorch with AOTInductor is not installed"
        if req.get("torch") and req["torch"] != libs.get("torch"):
            return f"built with torch {req['torch']}, this machine has {libs.get('torch')}: rebuild with `neat export {t}`"
        if req.get("arch") and req["arch"] != profile.arch:
            return f"built for {req['arch']}, this CPU is {profile.arch}"
        if t == "cpu":
            missing = [f for f in req.get("cpu_isa", []) if f not in profile.isa]
            return f"needs CPU features {', '.join(missing)} that this CPU lacks" if missing else ""
        ccs = [d.compute_capability for d in profile.cuda]
        if not ccs:
            return "no NVIDIA GPU here"
        return "" if req.get("compute_capability") in ccs else (
            f"built for compute capability {req.get('compute_capability')}, this GPU is {', '.join(ccs)}: "
            "rebuild with `neat export cuda` on it")
    if t == "tensorrt":
        flavour = req.get("flavour", "tensorrt")
        if flavour not in libs:
            return f"{flavour} is not installed"
        if req.get("tensorrt_version") and req["tensorrt_version"] != libs[flavour]:
            return f"engine built with {flavour} {req['tensorrt_version']}, this machine has {libs[flavour]}"
        ccs = [d.compute_capability for d in profile.cuda]
        if not ccs:
            return "no NVIDIA GPU here"
        built = req.get("compute_capabilities") or []
        if built and not set(built) & set(ccs):
            return (f"engine built for compute capability {', '.join(built)}, this GPU is {', '.join(ccs)}: "
                    f"rebuild with `neat export tensorrt --compute-capability {ccs[0]}`")
        return ""
    if t == "coreml":
        if profile.os != "Darwin":
            return f"CoreML runs only on macOS/iOS (this is {profile.os})"
        return "" if "coremltools" in libs else 'coremltools is not installed: pip install "neat-deploy[coreml]"'
    return f"unknown target {t}"


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
        problem = requirement_problem(art, profile)
        if not problem and bundle is not None:
            bad = file_problems(bundle, art)
            problem = ("integrity: " + "; ".join(bad)) if bad else ""
        preferred = art.target in order
        reason = problem or (f"{art.target} {art.precision}, verification {art.parity.verdict}" if preferred
                             else f"runs here, but not used on {profile.kind} machines unless asked for")
        out.append(Candidate(key, art.target, not problem, reason, preferred))
    if "reference" in manifest.model:
        why = "" if "torch" in profile.libraries else "PyTorch is not installed"
        out.append(Candidate(EAGER, EAGER, not why, why or "the PyTorch reference (last resort)"))
    else:
        out.append(Candidate(EAGER, EAGER, False, "the bundle carries no reference weights"))
    return out
