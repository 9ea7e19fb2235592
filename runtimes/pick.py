"""Loading a bundle for this machine: the candidates in order (runtimes.select), trust (runtimes.trust),
thread counts (runtimes.threads), and the first candidate that loads becomes a Session (runtimes.session)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from runtimes import backends, measured
from runtimes.bundle import Manifest, read_manifest, reference_path, verify_files
from runtimes.errors import BackendUnavailable, UntrustedCode
from runtimes.profile import HardwareProfile, detect
from runtimes.select import EAGER, Candidate, eager_requirements, rank
from runtimes.threads import Threads, plan
from runtimes.trust import screen

if TYPE_CHECKING:
    from runtimes.session import Session

log = logging.getLogger("runtimes")


@dataclass
class Choice:
    """Which backend a Session runs on, and why: the chosen candidate, then every other artifact of the bundle
    (and the eager reference) with why it was not chosen: skipped or failed before the chosen one, cannot run
    here (coreml off macOS, tensorrt without a GPU), or not tried because a higher-ranked one loaded."""

    key: str
    target: str
    reason: str
    skipped: list[Candidate] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.key}: {self.reason}"]
        lines += [f"  skipped {c.key}: {c.reason}" for c in self.skipped]
        return "\n".join(lines)


def _not_chosen(ranked: list[Candidate], chosen: str, skipped: list[Candidate], measured: dict,
                forced: str | None) -> list[Candidate]:
    """`skipped` (the candidates passed over or failed before the chosen one), then every other candidate
    with why it was not chosen."""
    out, seen = list(skipped), {c.key for c in skipped} | {chosen}
    for c in ranked:
        if c.key in seen:
            continue
        if forced is not None and forced not in (c.key, c.target):
            why = f"not tried: backend={forced!r} was asked for"
        elif not c.usable or not c.preferred:
            why = c.reason  # cannot run here, or not used on this kind of machine unless asked for
        elif c.key in measured:
            why = f"not chosen, slower when measured: {c.reason}"
        else:
            why = f"not tried: a higher-ranked artifact loaded; usable here: {c.reason}"
        out.append(Candidate(c.key, c.target, c.usable, why, c.preferred))
    return out


def _runner(bundle: Path, manifest: Manifest, cand: Candidate, profile: HardwareProfile, method: str = "",
            threads: Threads | None = None) -> Callable:
    """The chunk forward of a candidate, or with `method` one of its further entry points, on the thread
    count the plan gives that entry point (None: the libraries' defaults)."""
    n = threads.for_method(method or None) if threads else None
    if cand.target == EAGER:
        needs = eager_requirements(manifest) | ({"method": method} if method else {})
        return backends.get(EAGER).load(reference_path(bundle, manifest), needs, profile, threads=n)
    art = manifest.artifacts[cand.key]
    verify_files(bundle, art)  # hashes checked right before loading anything executable
    return backends.get(art.target).load(bundle / cand.key / method if method else bundle / cand.key,
                                         art.requirements, profile, threads=n)


def load(bundle: str | Path, backend: str | None = None, profile: HardwareProfile | None = None,
         autotune: bool | None = None, trust=None, threads: int | None = None) -> Session:
    """Open a bundle on this machine: the best usable artifact, falling back along the preference chain.

    backend: an artifact key ("onnx-fp32"), a target ("onnx"), or "eager", to force one (an error says
    why it cannot run here). autotune: None (default) ranks the usable CPU artifacts of a CPU machine by a
    short measurement of generation, once per machine, bundle and thread counts (runtimes.measured; off with
    NEAT_PICK=static); True measures every usable candidate on any machine; False keeps the static order.
    trust: which code-bearing artifacts (cpu, cuda, tensorrt) may load (runtimes.trust): None, those of a
    bundle signed by a key in $NEAT_HOME/trusted/; a list of public key paths, those keys too; "unsigned",
    also unsigned bundles' (an opt-in). Refused ones are skipped, or raise UntrustedCode when forced.
    threads: intra-op threads for every call (runtimes.threads; default: OMP_NUM_THREADS when set, else one
    for decode steps and a quarter of the usable cores, 1 to 4, for chunks); session.threads says which."""
    from runtimes.session import Session

    counts = plan(threads)
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    profile = profile or detect()
    ranked = rank(manifest, profile)  # files are hashed only for the artifact about to load (_runner)
    everything = ranked
    if backend is not None:
        wanted = [c for c in ranked if backend in (c.key, c.target)]
        if not wanted:
            raise BackendUnavailable(f"{bundle} has no artifact {backend!r}; it has "
                                     f"{', '.join(c.key for c in ranked)}")
        ranked = wanted
    # code-bearing artifacts of an untrusted bundle (the signature is checked only when one is a candidate)
    refused = screen(ranked, bundle, manifest, trust)
    if backend is not None and not any(c.usable for c in ranked) and refused:
        raise UntrustedCode(f"{bundle}: {backend} is code-bearing, and the bundle is {next(iter(refused.values()))}")
    opened: dict[str, Session] = {}  # sessions the measurement opened, by key
    if backend is None and measured.wanted(autotune, profile.kind):
        def open_session(cand: Candidate) -> Session:
            s = Session(bundle, manifest, _runner(bundle, manifest, cand, profile, threads=counts),
                        Choice(cand.key, cand.target, cand.reason),
                        lambda method: _runner(bundle, manifest, cand, profile, method, counts))
            s.threads = counts
            return s

        ranked = measured.rank_measured(ranked, measured.fingerprint(profile, manifest, counts), open_session,
                                        bool(autotune), opened)
    skipped: list[Candidate] = []
    for cand in ranked:
        if not cand.usable or (backend is None and not cand.preferred):
            skipped.append(cand)
            continue
        if cand.key in opened:  # measured just now: that session, not a second load
            session = opened[cand.key]
            session.backend = Choice(cand.key, cand.target, cand.reason,
                                     _not_chosen(everything, cand.key, skipped, opened, backend))
            return session
        try:
            run = _runner(bundle, manifest, cand, profile, threads=counts)
        except Exception as exc:  # a backend failing to load is a reason to fall back, not to stop
            said = " ".join(str(exc).split())[:500]  # one line, whatever the library's message
            skipped.append(Candidate(cand.key, cand.target, False, f"failed to load: {type(exc).__name__}: {said}"))
            log.warning("%s: not loaded (%s: %s); falling back to the next artifact", cand.key,
                        type(exc).__name__, exc)
            continue
        choice = Choice(cand.key, cand.target, cand.reason, _not_chosen(everything, cand.key, skipped, opened, backend))
        session = Session(bundle, manifest, run, choice,
                          lambda method, cand=cand: _runner(bundle, manifest, cand, profile, method, counts))
        session.threads = counts
        return session
    reasons = "; ".join(f"{c.key}: {c.reason}" for c in skipped)
    raise BackendUnavailable(f"nothing in {bundle} can run here ({reasons})")


