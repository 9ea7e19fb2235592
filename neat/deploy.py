"""NEAT's bundle steps as library calls, shared by the `neat` command and the benchmarks: the description a
bundle is re-verified with, the default bundle (exported when missing), the verdict on a set of artifacts,
and the errors that are the user's to fix (the command prints them as one paragraph, not a traceback).

Light to import: the exporters and the model are imported only by the functions that need them.
"""
from __future__ import annotations

from pathlib import Path

from neat.errors import NeatError

DEFAULT_BUNDLE = Path("neat-bundle")
# `neat run`'s sampling, measured on the shipped model by benchmarks/sampling.py (the record:
# benchmarks/results/sampling.json, whose "chosen" a test holds this to): the most plausible samples under
# the model that repeat themselves no more than real held-out text does. Greedy decoding loops on this model.
RUN_SAMPLING = {"temperature": 0.8, "top_k": 10}


class ArtifactsFailed(NeatError):
    """Artifacts failed verification or could not be built; the message names each one and the reason."""


def user_errors() -> tuple[type[Exception], ...]:
    """Every library error that is the user's to fix."""
    from exporters.errors import ExportError
    from runtimes.errors import RuntimeLayerError

    return (NeatError, ExportError, RuntimeLayerError)


def check(outcomes, out: Path) -> None:
    """Raise ArtifactsFailed naming every artifact of `outcomes` (exporter outcomes for the bundle `out`)
    that did not pass."""
    bad = [o for o in outcomes if not o.ok]
    if bad:
        names = ", ".join(f"{o.key} ({o.message})" for o in bad)
        raise ArtifactsFailed(f"{len(bad)} artifact(s) failed in {out}: {names}")


def parse_batch(value: str) -> tuple[int, int]:
    """`neat export --batch`: MIN:MAX or N as bounds (click.BadParameter when it is neither)."""
    import click

    try:
        lo, _, hi = value.partition(":")
        bounds = (int(lo), int(hi or lo))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not MIN:MAX (e.g. 1:4) or N") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise click.BadParameter(f"{value!r}: need 1 <= MIN <= MAX")
    return bounds


def bundle_spec(bundle: Path):
    """The export description to re-verify `bundle` with: the reference weights it carries, at its batch bounds."""
    from neat.export_spec import neat_spec
    from runtimes.bundle import read_manifest, reference_path
    from runtimes.errors import BundleError

    manifest = read_manifest(bundle)
    weights = reference_path(bundle, manifest)
    if weights is None:
        raise BundleError(f"{bundle} carries no reference weights, so its artifacts cannot be re-verified")
    dyn = manifest.signature.get("dynamic", {}).get("batch", {"min": 1, "max": 1})
    return neat_spec(weights, batch=(dyn["min"], dyn["max"]))


def default_bundle() -> Path:
    """The default bundle, first exported with every target this machine can build when it does not exist
    (progress on stderr); ArtifactsFailed when an artifact fails."""
    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        from exporters.build import export_bundle
        from neat.export_spec import neat_spec
        from neat.progress import timed_step

        check(export_bundle(neat_spec(), ["all"], DEFAULT_BUNDLE, step=timed_step), DEFAULT_BUNDLE)
    return DEFAULT_BUNDLE


def run_sampling(greedy: bool, temperature: float | None, top_k: int | None) -> tuple[float, int]:
    """`neat run`'s (temperature, top_k): greedy (0, 0) with --greedy, else RUN_SAMPLING where not given."""
    if greedy:
        if temperature or top_k:
            raise NeatError("--greedy takes the most likely byte every time: give it without --temperature "
                            "and --top-k")
        return 0.0, 0
    return (RUN_SAMPLING["temperature"] if temperature is None else temperature,
            RUN_SAMPLING["top_k"] if top_k is None else top_k)
