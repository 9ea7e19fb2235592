"""torch.compile's steady state: the eager reference with its chunk forward and every decode method wrapped in
`torch.compile`, as a Session, so `neat bench` times it beside the artifacts the same way (its own worker
process, `timing`; parity, bits per byte and greedy generation against the reference).

It is what a user would try instead of exporting, not an artifact of the bundle: `runtimes.load` never picks
it, and its row is labelled LABEL. Each entry point compiles on its first call (the warm-up calls absorb it);
its cold start is torch.compile's first call in a fresh process (`coldstart.torch_compile`).
"""
from __future__ import annotations

from pathlib import Path

LABEL = "torch.compile"


def session(bundle: str | Path, threads: int | None = None, backend: str = "inductor"):
    """A Session over the bundle's reference weights compiled by torch.compile (`backend`: Inductor, what a
    user gets by default; "eager" traces with Dynamo and runs the graphs as they are, no code generated);
    threads as in runtimes.load (runtimes.threads)."""
    import torch

    from runtimes import backends
    from runtimes.backends.common import torch_runner
    from runtimes.bundle import read_manifest, reference_path
    from runtimes.pick import Choice
    from runtimes.select import EAGER, eager_requirements
    from runtimes.session import Session
    from runtimes.threads import plan

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    counts = plan(threads)
    build = backends.get(EAGER).loader(eager_requirements(manifest)["loader"])

    def runner(method: str = ""):
        model = build(reference_path(bundle, manifest)).eval()
        if method:
            model = model.entry_point(method).eval()
        return torch_runner(torch.compile(model, backend=backend), copy=True, threads=counts.for_method(method or None))

    s = Session(bundle, manifest, runner(), Choice(LABEL, EAGER, "the eager reference under torch.compile "
                                                   "(for comparison: never picked by runtimes.load)"), runner)
    s.threads = counts
    return s
