"""The bundle: a directory of artifacts described by manifest.json. This is the contract between the
exporters (which write bundles) and the runtimes (which read them), so it lives on the runtime side.

A bundle is checked before anything in it is loaded: the manifest parses against its schema, every file
is inside the bundle directory, and its sha256 and size match. AOTInductor packages and TensorRT engines
are executable code: a bundle is trusted only as far as its integrity and origin are known.

Writes are atomic: a new version is built in a temporary sibling directory and renamed into place, so an
interrupted or failed export leaves the previous bundle intact.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from runtimes.errors import BundleError, IntegrityError

SCHEMA = "neat-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE_DIR = "reference"  # the model's weights, when the bundle carries them
INIT_STATE = "signature/init_state.safetensors"
VERDICTS = ("passed", "failed", "not verified", "built, not executed")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class FileEntry:
    path: str      # POSIX path relative to the bundle directory
    sha256: str
    size: int


@dataclass
class Parity:
    verdict: str                       # one of VERDICTS
    method: str                        # how it was verified, in words (e.g. "executed: onnxruntime CPU")
    tolerance: dict = field(default_factory=dict)
    cases: list = field(default_factory=list)   # per case: name, batch, chunks, metrics
    worst: dict = field(default_factory=dict)   # the worst figure against its limit
    notes: str = ""


@dataclass
class Artifact:
    target: str
    precision: str
    files: list[FileEntry]
    toolchain: dict                    # library versions used to build it
    requirements: dict                 # what a machine needs to run it
    build_seconds: float
    parity: Parity
    settings: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return artifact_key(self.target, self.precision)


def artifact_key(target: str, precision: str) -> str:
    return f"{target}-{precision}"


@dataclass
class Manifest:
    model: dict                        # name, config, weights_sha256, params
    signature: dict                    # inputs, state, outputs, dynamic dims, token id range
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION
    updated: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


def _require(raw: dict, key: str, kind, where: str):
    if key not in raw:
        raise BundleError(f"manifest: {where} has no '{key}'; re-export the bundle with `neat export`")
    if not isinstance(raw[key], kind):
        raise BundleError(f"manifest: {where}.{key} should be {getattr(kind, '__name__', kind)}; re-export the bundle")
    return raw[key]


def parse_manifest(text: str, where: str = MANIFEST) -> Manifest:
    """Parse and validate a manifest's JSON text against the schema."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where} is not valid JSON ({exc}); re-export the bundle with `neat export`") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise BundleError(f"{where} is not a NEAT bundle manifest (no schema '{SCHEMA}')")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{where} has schema version {raw.get('schema_version')!r}; this version reads "
                          f"{SCHEMA_VERSION}: re-export the bundle with this version's `neat export`")
    model = _require(raw, "model", dict, "manifest")
    signature = _require(raw, "signature", dict, "manifest")
    for key in ("inputs", "state", "outputs"):
        _require(signature, key, list, "signature")
    artifacts = {}
    for key, a in _require(raw, "artifacts", dict, "manifest").items():
        where_a = f"artifacts.{key}"
        files = [FileEntry(**_check_file(f, where_a)) for f in _require(a, "files", list, where_a)]
        p = _require(a, "parity", dict, where_a)
        if p.get("verdict") not in VERDICTS:
            raise BundleError(f"manifest: {where_a}.parity.verdict must be one of {VERDICTS}")
        artifacts[key] = Artifact(
            target=_require(a, "target", str, where_a), precision=_require(a, "precision", str, where_a),
            files=files, toolchain=_require(a, "toolchain", dict, where_a),
            requirements=_require(a, "requirements", dict, where_a),
            build_seconds=float(_require(a, "build_seconds", (int, float), where_a)),
            parity=Parity(**{k: p[k] for k in ("verdict", "method", "tolerance", "cases", "worst", "notes") if k in p}),
            settings=a.get("settings", {}),
        )
    return Manifest(model=model, signature=signature, artifacts=artifacts, updated=raw.get("updated", ""))


def _check_file(f, where: str) -> dict:
    if not isinstance(f, dict) or not {"path", "sha256", "size"} <= set(f):
        raise BundleError(f"manifest: every file of {where} needs path, sha256 and size")
    return {"path": str(f["path"]), "sha256": str(f["sha256"]), "size": int(f["size"])}


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
    _recover(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"no bundle at {bundle} (no {MANIFEST}); create one with `neat export`")
    return parse_manifest(path.read_text(), str(path))


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
    f = FileEntry(**_check_file(raw, where))
    problem = entry_problem(bundle, f)
    if problem:
        raise IntegrityError(f"{problem}; re-export the bundle with `neat export`")
    return resolve_inside(bundle, f.path)


def file_problems(bundle: Path, artifact: Artifact) -> list[str]:
    """Every way the artifact's files differ from the manifest (empty when intact)."""
    return [p for p in (entry_problem(bundle, f) for f in artifact.files) if p]


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
    return [tensors[t["name"]] for t in manifest.signature["state"]]


def verify_files(bundle: Path, artifact: Artifact) -> None:
    problems = file_problems(bundle, artifact)
    if problems:
        raise IntegrityError(f"artifact {artifact.key} failed its integrity check: " + "; ".join(problems)
                             + f". Re-export it with `neat export {artifact.target}`")


# ----- writing --------------------------------------------------------------------------------------
def _backup_name(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".previous")


def _recover(bundle: Path) -> None:
    """Finish an interrupted swap: if the bundle is gone but its previous version is beside it, restore it."""
    backup = _backup_name(bundle)
    if backup.is_dir() and not bundle.exists():
        os.replace(backup, bundle)


class BundleWriter:
    """A new version of a bundle, built in a temporary sibling directory.

    Existing artifacts are copied in. A new artifact is built in `stage(key)` and moved into place by
    `add()` only once it passed, so a failing rebuild keeps the previous artifact. `commit()` writes the
    manifest and swaps the new directory into place; leaving the context without commit discards it all.
    """

    def __init__(self, bundle: Path, manifest: Manifest, work: Path):
        self.bundle, self.manifest, self.work = bundle, manifest, work

    def stage(self, key: str) -> Path:
        d = self.work / ".staging" / key
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def add(self, key: str, staged: Path, **fields) -> Artifact:
        """Move a staged artifact into place and record it; `fields` are Artifact's other fields."""
        final = self.work / key
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)
        files = [FileEntry(p.relative_to(self.work).as_posix(), sha256_file(p), p.stat().st_size)
                 for p in sorted(final.rglob("*")) if p.is_file()]
        artifact = Artifact(files=files, **fields)
        if artifact.key != key:
            raise ValueError(f"artifact key {artifact.key} != {key}")
        self.manifest.artifacts[key] = artifact
        return artifact

    def set_reference(self, weights: Path, loader: str = "") -> None:
        """Carry the reference weights (so the bundle can be re-verified, and run eagerly as a last resort),
        and the name of the installed entry point that rebuilds the model from them (runtimes.eager)."""
        d = self.work / REFERENCE_DIR
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        dst = d / weights.name
        shutil.copyfile(weights, dst)
        self.manifest.model["reference"] = asdict(
            FileEntry(dst.relative_to(self.work).as_posix(), sha256_file(dst), dst.stat().st_size))
        if loader:
            self.manifest.model["reference_loader"] = loader

    def set_init_state(self, tensors: dict) -> None:
        """The state before the first chunk, at batch 1 (a runtime repeats it along the batch)."""
        from safetensors.numpy import save_file

        path = self.work / INIT_STATE
        path.parent.mkdir(exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
        self.manifest.signature["init_state"] = asdict(
            FileEntry(INIT_STATE, sha256_file(path), path.stat().st_size))

    def commit(self) -> None:
        shutil.rmtree(self.work / ".staging", ignore_errors=True)
        self.manifest.updated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        (self.work / MANIFEST).write_text(self.manifest.to_json())
        backup = _backup_name(self.bundle)
        if backup.exists():
            shutil.rmtree(backup)
        if self.bundle.exists():
            os.replace(self.bundle, backup)
        os.replace(self.work, self.bundle)
        if backup.exists():
            shutil.rmtree(backup)


@contextlib.contextmanager
def write_bundle(bundle: str | Path, model: dict, signature: dict) -> Iterator[BundleWriter]:
    """Open a bundle for writing. A bundle of another model (other weights or config) is not mixed with:
    its artifacts are dropped, since they would no longer match the reference."""
    bundle = Path(bundle)
    _recover(bundle)
    if bundle.exists() and not (bundle / MANIFEST).is_file():
        if any(bundle.iterdir()):
            raise BundleError(f"{bundle} exists and is not a bundle (no {MANIFEST}); choose another --out")
    bundle.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.", suffix=".partial", dir=bundle.parent))
    try:
        manifest = Manifest(model=model, signature=signature)
        if (bundle / MANIFEST).is_file():
            old = read_manifest(bundle)
            same_signature = {k: v for k, v in old.signature.items() if k != "init_state"} == signature
            if old.model.get("weights_sha256") == model.get("weights_sha256") and same_signature:
                if (bundle / INIT_STATE).is_file() and "init_state" in old.signature:
                    (work / INIT_STATE).parent.mkdir()
                    shutil.copyfile(bundle / INIT_STATE, work / INIT_STATE)
                    manifest.signature["init_state"] = old.signature["init_state"]
                if (bundle / REFERENCE_DIR).is_dir() and "reference" in old.model:
                    shutil.copytree(bundle / REFERENCE_DIR, work / REFERENCE_DIR)
                    manifest.model["reference"] = old.model["reference"]
                    if "reference_loader" in old.model:
                        manifest.model["reference_loader"] = old.model["reference_loader"]
                for key, art in old.artifacts.items():
                    if (bundle / key).is_dir():
                        shutil.copytree(bundle / key, work / key)
                        manifest.artifacts[key] = art
        yield BundleWriter(bundle, manifest, work)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
