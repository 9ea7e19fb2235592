"""Greedy generation through every artifact of a bundle that runs here, against the eager reference."""
from __future__ import annotations

from pathlib import Path

from runtimes.bundle import read_manifest
from runtimes.profile import detect
from runtimes.select import EAGER, rank


def first_difference(a: bytes, b: bytes) -> int | None:
    """Index of the first differing byte (or the shorter length if one is a prefix), None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_generation(bundle: str | Path, prompt: bytes, max_new_bytes: int) -> list[dict]:
    """[{key, text, first_difference, error}] for the reference and every usable artifact."""
    from runtimes.session import load

    bundle = Path(bundle)
    ranking = rank(read_manifest(bundle), detect(), bundle)
    reference = load(bundle, backend=EAGER).generate(prompt, max_new_bytes)
    rows = [{"key": EAGER, "text": reference, "first_difference": None, "error": ""}]
    for cand in ranking:
        if cand.key == EAGER or not cand.usable:
            continue
        try:
            text = load(bundle, backend=cand.key).generate(prompt, max_new_bytes)
        except Exception as exc:  # report, and go on with the others
            rows.append({"key": cand.key, "text": b"", "first_difference": None, "error": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append({"key": cand.key, "text": text, "first_difference": first_difference(text, reference), "error": ""})
    return rows
