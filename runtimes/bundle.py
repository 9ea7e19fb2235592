"""Reading a bundle: a directory of artifacts described by manifest.json (runtimes.manifest).

A bundle is checked before anything in it is loaded: the manifest parses against its schema, every file
is inside the bundle directory, and its sha256 and size match. AOTInductor packages and TensorRT engines
are executable code: a bundle is trusted only as far as its integrity and origin are known.

Bundles are written by exporters.writer, atomically: a new version is built in a temporary sibling directory
and swapped into place. `recover` finishes a swap that was interrupted (the reader calls it first).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from runtimes.errors import BundleError, IntegrityError
from runtimes.manifest import MANIFEST, MAX_MANIFEST_BYTES, Artifact, FileEntry, Manifest, check_file, parse_manifest, sha256_file


def resolve_inside(bundle: Path, rel: str) -> Path:
    """The absolute path of a bundle file, refusing anything that would leave the bundle directory."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise IntegrityError(f"bundle file path {rel!r} is not inside the bundle; the manifest was tampered with")
    root = bundle.resolve()
    path = (root / Path(*pure.parts)).resolve()
    if root != path and root not in path.parents:
        raise IntegrityError(f"bundle file {rel!r} resolves outside the bundle ({path}); refusing to load it")
    return path


def read_manifest(bundle: str | Path) -> Manifest:
    bundle = Path(bundle)
    recover(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"no bundle at {bundle} (no {MANIFEST}); create one with `neat export`")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is over {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest this tool wrote")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-export the bundle") from None
    return parse_manifest(text, str(path))


def entry_problem(bundle: Path, f: FileEntry) -> str:
    """How one file differs from its manifest entry ('' when intact)."""
    try:
        path = resolve_inside(bundle, f.path)
    except IntegrityError as exc:
        return str(exc)
    if not path.is_file():
        return f"{f.path} is missing"
    if path.stat().st_size != f.size:
        return f"{f.path} is {path.stat().st_size} bytes, the manifest says {f.size} (truncated or replaced)"
    if sha256_file(path) != f.sha256:
        return f"{f.path} does not match its sha256 (corrupted or modified)"
    return ""


def _checked_entry(bundle: Path, raw: dict, where: str) -> Path:
    """The path of a single-file manifest entry, after its integrity check."""
    f = FileEntry(**check_file(raw, where))
    problem = entry_problem(bundle, f)
    if problem:
        raise IntegrityError(f"{problem}; re-export the bundle with `neat export`")
    return resolve_inside(bundle, f.path)


def unlisted_problems(bundle: Path, artifact: Artifact) -> list[str]:
    """The files the artifact's backend opens (its FILE, or those its optional `opens(requirements)` names, for
    the chunk forward and each method) that the manifest does not list, and so does not hash: a backend loads
    only what the integrity check covered. A
    FILE that is a directory (an .mlpackage) is opened whole: every file in it must be listed."""
    from runtimes import backends
    from runtimes.errors import BackendUnavailable

    try:
        backend = backends.get(artifact.target)
    except BackendUnavailable:
        return []  # no backend here opens anything of it
    files = backend.opens(artifact.requirements) if hasattr(backend, "opens") else [backend.FILE]
    listed = {f.path for f in artifact.files}
    out = []
    for method, opened in ((m, f) for m in ["", *artifact.methods] for f in files):
        rel = "/".join(p for p in (artifact.key, method, opened) if p)
        inside = {p for p in listed if p.startswith(rel + "/")}
        if rel not in listed and not inside:
            out.append(f"artifact {artifact.key} does not list {rel}, which its backend loads: re-export it")
            continue
        folder = bundle / rel
        if inside and folder.is_dir() and not folder.is_symlink():
            extra = sorted(p.relative_to(bundle).as_posix() for p in folder.rglob("*") if not p.is_dir())
            extra = [p for p in extra if p not in inside]
            if extra:
                out.append(f"artifact {artifact.key} does not list {', '.join(extra[:3])}"
                           f"{f' and {len(extra) - 3} more' if len(extra) > 3 else ''} in {rel}, which its "
                           "backend loads: re-export it")
    return out


def file_problems(bundle: Path, artifact: Artifact) -> list[str]:
    """Every way the artifact's files differ from the manifest (empty when intact): a file its backend opens
    that the manifest does not list, or a listed file missing, outside the bundle, or changed."""
    return unlisted_problems(bundle, artifact) + [p for p in (entry_problem(bundle, f) for f in artifact.files) if p]


def reference_path(bundle: Path, manifest: Manifest) -> Path | None:
    """The bundle's reference weights after their integrity check, or None when it carries none."""
    entry = manifest.model.get("reference")
    return _checked_entry(bundle, entry, "model.reference") if entry else None


def read_init_state(bundle: Path, manifest: Manifest) -> list[np.ndarray]:
    """The initial state tensors at batch 1, in signature order, after their integrity check."""
    from safetensors.numpy import load_file

    entry = manifest.signature.get("init_state")
    if not entry:
        raise BundleError(f"{bundle} records no initial state; re-export it with `neat export`")
    tensors = load_file(str(_checked_entry(bundle, entry, "signature.init_state")))
    out = []
    for t in manifest.signature["state"]:
        want = tuple(1 if d == "batch" else d for d in t["shape"])
        got = tensors.get(t["name"])
        if got is None or got.shape != want or str(got.dtype) != t["dtype"]:
            found = "absent" if got is None else f"{got.dtype} {tuple(got.shape)}"
            raise BundleError(f"{bundle}: the initial state {t['name']!r} is {found}, the signature says "
                              f"{t['dtype']} {want}; the manifest does not match its files: re-export the bundle")
        out.append(got)
    return out


def verify_files(bundle: Path, artifact: Artifact) -> None:
    problems = file_problems(bundle, artifact)
    if problems:
        raise IntegrityError(f"artifact {artifact.key} failed its integrity check: " + "; ".join(problems)
                             + f". Re-export it with `neat export {artifact.target}`")


def backup_name(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".previous")


def recover(bundle: Path) -> None:
    """Finish an interrupted swap: if the bundle is gone but its previous version is beside it, restore it."""
    backup = backup_name(bundle)
    if backup.is_dir() and not bundle.exists():
        os.replace(backup, bundle)
