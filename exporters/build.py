"""Export driver: one capture, every requested target built, verified and written into the bundle."""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, ContextManager

from exporters.capture import Captured
from exporters.errors import ExportError, TargetUnavailable
from exporters.methods import MethodsOutcome, build_methods, capture_methods, check_methods
from exporters.spec import ExportSpec
from exporters.verify import TOLERANCES, verify
from exporters.writer import write_bundle
from runtimes.manifest import Parity, artifact_key
from runtimes.errors import EvaluationUnsupported

Step = Callable[[str], ContextManager]  # step(label) wraps one long step (progress + elapsed time)


@contextlib.contextmanager
def _quiet(label: str):
    yield


@dataclass
class Outcome:
    target: str
    precision: str
    verdict: str                 # passed | failed | not verified | built, not executed | error
    message: str = ""
    build_seconds: float = 0.0
    size: int = 0
    worst: dict = field(default_factory=dict)
    error: str = ""              # the typed error's class name when verdict is "error"
    method: str = ""             # how its parity was checked ("executed: ...", "evaluated off-device: ...")
    files_checked: int = 0       # verify_bundle: its files whose sha256 matched the manifest (0: not all did)

    @property
    def key(self) -> str:
        return artifact_key(self.target, self.precision)

    @property
    def ok(self) -> bool:
        return self.verdict not in ("failed", "error")


def resolve_targets(names: list[str], precision: str) -> list[str]:
    """Expand 'all' to every target buildable here at this precision (a target with NOT_IN_ALL, its reason, is
    built only when named); refuse unknown or unbuildable ones."""
    from exporters.registry import TARGETS

    out: list[str] = []
    for name in names:
        if name == "all":
            out += [t for t, m in TARGETS.items()
                    if not getattr(m, "NOT_IN_ALL", "") and precision in m.PRECISIONS and m.is_available()[0]]
            continue
        if name not in TARGETS:
            raise ExportError(f"unknown target {name!r}; choose from {', '.join(TARGETS)} or all")
        mod = TARGETS[name]
        if precision not in mod.PRECISIONS:
            raise ExportError(f"target {name} has no {precision} precision; it has {', '.join(mod.PRECISIONS)}")
        ok, why = mod.is_available()
        if not ok:
            raise TargetUnavailable(f"cannot build target {name} here: {why}")
        out.append(name)
    return list(dict.fromkeys(out))


def check_options(targets: list[str], options: dict) -> None:
    """Refuse an option that none of the targets being built takes (it would be silently ignored)."""
    from exporters.registry import TARGETS

    taken = {f.name: t for t, m in TARGETS.items() for f in fields(m.Settings)}
    wanted = {f.name for t in targets for f in fields(TARGETS[t].Settings)}
    stray = sorted(k for k, v in options.items() if v not in (None, (), False) and k not in wanted)
    if stray:
        owners = ", ".join(f"{k} ({'target ' + taken[k] if k in taken else 'no target'})" for k in stray)
        raise ExportError(f"option(s) {owners} do not apply to {', '.join(targets)}: drop them, or add the "
                          "target they belong to")


def settings_for(target: str, options: dict) -> object:
    """The target's Settings dataclass, filled from `options` entries that name one of its fields."""
    from exporters.registry import TARGETS

    cls = TARGETS[target].Settings
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in names and v is not None})


def check(spec: ExportSpec, make_execution, precision: str) -> Parity:
    """Verify by execution where possible; otherwise record what stands instead, never as passed. An
    artifact that does not even load fails, with the reason."""
    tolerance = TOLERANCES[precision].to_dict()
    try:
        execution = make_execution()
    except EvaluationUnsupported as exc:
        return Parity(verdict="not verified", method="", tolerance=tolerance, notes=str(exc))
    except Exception as exc:  # a runtime's loader raises many kinds; all mean the artifact is unusable
        why = f"the artifact does not load: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        return Parity(verdict="failed", method="load", tolerance=tolerance, notes=why)
    if execution.run is None:
        return Parity(verdict=execution.verdict, method=execution.method, tolerance=tolerance, notes=execution.method)
    try:
        return verify(spec, execution.run, precision, execution.method)
    except EvaluationUnsupported as exc:
        return Parity(verdict="not verified", method=execution.method, tolerance=tolerance, notes=str(exc))


def export_bundle(spec: ExportSpec, targets: list[str], out: str | Path, precision: str = "fp32",
                  options: dict | None = None, step: Step = _quiet, sign: bool = True) -> list[Outcome]:
    """Build every target into the bundle at `out`. Artifacts that fail verification are not written
    (a previous version of the same artifact stays); the others are committed together at the end, the
    bundle signed with the user's own key (runtimes.trust.own_key) unless `sign` is False or NEAT_SIGN=0."""
    from exporters.explain import explain_failure
    from exporters.registry import TARGETS
    from runtimes.trust import auto_sign_key

    names = resolve_targets(targets, precision)
    if not names:
        raise TargetUnavailable(f"no target can be built here at {precision}; see `neat export --help`")
    check_options(names, options or {})
    if "all" in targets:
        for t, m in TARGETS.items():
            if getattr(m, "NOT_IN_ALL", "") and t not in names:
                with step(f"{t}: {m.NOT_IN_ALL}"):
                    pass
    also = f" (and methods {', '.join(spec.methods)})" if spec.methods else ""
    with step(f"capture {spec.name} with torch.export{also}"):
        cap = Captured(spec)
        method_caps = capture_methods(spec)
        cap.methods = method_caps  # a target holding every method in one program (executorch) lowers them at once
    model = {"name": spec.name, "config": spec.config, "weights_sha256": spec.weights_sha256, **spec.info}
    outcomes: list[Outcome] = []
    with write_bundle(out, model, spec.signature()) as writer:
        kept = writer.manifest.model
        if spec.reference_file is not None and ("reference" not in kept or
                                                kept.get("reference_loader") != spec.reference_loader):
            writer.set_reference(Path(spec.reference_file), spec.reference_loader)
        if "init_state" not in writer.manifest.signature:
            writer.set_init_state({t.name: s.numpy() for t, s in zip(spec.state, spec.init_state(1))})
        for name in names:
            key = artifact_key(name, precision)
            staged = writer.stage(key)
            try:
                settings = settings_for(name, {**(options or {}), "precision": precision})
                with step(f"{key}: build"):
                    t0 = time.perf_counter()
                    built = TARGETS[name].export(cap, staged, settings)
                    seconds = time.perf_counter() - t0
                with step(f"{key}: verify against the reference"):
                    parity = check(spec, lambda: TARGETS[name].runner(staged, built.requirements), precision)
                methods = (build_methods(TARGETS[name], method_caps, staged, settings, spec, precision, step)
                           if parity.verdict != "failed" else MethodsOutcome())
                seconds += methods.build_seconds
            except ExportError as exc:
                outcomes.append(Outcome(name, precision, "error", str(exc), error=type(exc).__name__))
                continue
            size = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
            verdict = methods.verdict(parity.verdict)
            if parity.verdict == "failed" and parity.method != "load":  # where it departs (exporters.explain)
                with step(f"{key}: explain where it departs from the reference"):
                    parity.notes = f"{parity.notes}\n{explain_failure(cap, staged, precision)}"
            message = "; ".join(m for m in (parity.notes, methods.notes()) if m)
            outcomes.append(Outcome(name, precision, verdict, message, round(seconds, 2), size, parity.worst))
            if verdict == "failed":
                continue
            writer.add(key, staged, target=name, precision=precision, toolchain=built.toolchain,
                       requirements=built.requirements, build_seconds=round(seconds, 2), parity=parity,
                       settings=built.settings, methods=methods.parity, decode=methods.decode)
        if any(o.ok for o in outcomes):
            writer.commit(auto_sign_key() if sign else None)
    return outcomes


def verify_bundle(bundle: str | Path, spec: ExportSpec, step: Step = _quiet,
                  keys: tuple[str, ...] = (), trust=None) -> list[Outcome]:
    """Recheck every artifact's files against the manifest (or only the artifacts `keys` names), then rerun
    every verification possible here. Code-bearing artifacts run only as runtimes.load would run them
    (`trust`, see runtimes.trust); refused ones are "not verified", with the reason."""
    from exporters.registry import TARGETS
    from runtimes.bundle import file_problems, read_manifest
    from runtimes.trust import CODE_BEARING, code_refusal

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    refusal = functools.cache(lambda: code_refusal(bundle, manifest, trust))  # the signature, checked once
    if manifest.model.get("weights_sha256") != spec.weights_sha256:
        raise ExportError(f"{bundle} was built from other weights than {spec.name}'s reference; "
                          "verify it with the checkpoint it was exported from, or re-export it")
    unknown = [k for k in keys if k not in manifest.artifacts]
    if unknown:
        raise ExportError(f"{bundle} has no artifact {', '.join(map(repr, unknown))}; it has "
                          f"{', '.join(manifest.artifacts) or 'none'}")
    outcomes = []
    for key, art in manifest.artifacts.items():
        if keys and key not in keys:
            continue
        problems = file_problems(bundle, art)
        size = sum(f.size for f in art.files)
        if problems:
            outcomes.append(Outcome(art.target, art.precision, "failed", "integrity: " + "; ".join(problems), size=size))
            continue
        hashed = len(art.files)
        if art.target in CODE_BEARING and (refused := refusal()):
            outcomes.append(Outcome(art.target, art.precision, "not verified", refused, size=size,
                                    files_checked=hashed))
            continue
        if art.target not in TARGETS:
            outcomes.append(Outcome(art.target, art.precision, "not verified", f"unknown target {art.target}",
                                    files_checked=hashed))
            continue
        with step(f"{key}: verify against the reference"):
            parity = check(spec, lambda: TARGETS[art.target].runner(bundle / key, art.requirements), art.precision)
        carried = {m: art.requirements for m in art.methods if m in spec.methods}
        methods = check_methods(TARGETS[art.target], bundle / key, carried, spec, art.precision, step)
        message = "; ".join(m for m in (parity.notes, methods.notes()) if m)
        outcomes.append(Outcome(art.target, art.precision, methods.verdict(parity.verdict), message,
                                art.build_seconds, size, parity.worst, method=parity.method,
                                files_checked=hashed))
    return outcomes
