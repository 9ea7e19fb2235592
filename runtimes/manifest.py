"""The manifest: the schema of a bundle's manifest.json, and its parsing and validation.

This is the contract between the exporters (which write bundles, exporters.writer) and the runtimes (which
read them, runtimes.bundle), so it lives on the runtime side.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtimes.errors import BundleError

SCHEMA = "neat-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE_DIR = "reference"  # the model's weights, when the bundle carries them
INIT_STATE = "signature/init_state.safetensors"
VERDICTS = ("passed", "failed", "not verified", "built, not executed")
MAX_MANIFEST_BYTES = 16 * 2**20  # a manifest is a few hundred KB at most; a larger one is refused unread
PLAIN = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")  # a target or precision: artifact keys become directory names
SHA256 = re.compile(r"[0-9a-f]{64}")


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
    # further entry points built into this artifact (files under <key>/<method>/): method -> its parity;
    # `decode`: the check that stepping through them reproduces the chunk forward (None where it did not run)
    methods: dict[str, Parity] = field(default_factory=dict)
    decode: Parity | None = None

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
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where} is over {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest this tool wrote")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where} is not valid JSON ({exc}); re-export the bundle with `neat export`") from None
    except RecursionError:
        raise BundleError(f"{where} is nested too deeply to be a manifest; re-export the bundle") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise BundleError(f"{where} is not a NEAT bundle manifest (no schema '{SCHEMA}')")
    version = raw.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BundleError(f"{where} has schema version {raw.get('schema_version')!r}; this version reads "
                          f"{SCHEMA_VERSION}: re-export the bundle with this version's `neat export`")
    model = _require(raw, "model", dict, "manifest")
    signature = _require(raw, "signature", dict, "manifest")
    for key in ("inputs", "state", "outputs"):
        _require(signature, key, list, "signature")
    methods = _check_methods(signature)
    artifacts = {}
    for key, a in _require(raw, "artifacts", dict, "manifest").items():
        where_a = f"artifacts.{key}"
        if not isinstance(a, dict):
            raise BundleError(f"manifest: {where_a} should be an object; re-export the bundle")
        target, precision = _require(a, "target", str, where_a), _require(a, "precision", str, where_a)
        if not (PLAIN.fullmatch(target) and PLAIN.fullmatch(precision)) or key != artifact_key(target, precision):
            raise BundleError(f"manifest: artifact key {key!r} must be <target>-<precision> of plain lower-case "
                              "names (it is a directory of the bundle); the manifest was tampered with")
        files = [FileEntry(**check_file(f, where_a)) for f in _require(a, "files", list, where_a)]
        carried = a.get("methods", {})
        if not isinstance(carried, dict) or set(carried) - set(methods):
            raise BundleError(f"manifest: {where_a}.methods must map method names of signature.methods to "
                              "their parity; re-export the bundle")
        artifacts[key] = Artifact(
            target=target, precision=precision, files=files, toolchain=_require(a, "toolchain", dict, where_a),
            requirements=_require(a, "requirements", dict, where_a),
            build_seconds=float(_require(a, "build_seconds", (int, float), where_a)),
            parity=_parity(_require(a, "parity", dict, where_a), f"{where_a}.parity"),
            settings=_require(a, "settings", dict, where_a) if "settings" in a else {},
            methods={m: _parity(p, f"{where_a}.methods.{m}") for m, p in carried.items()},
            decode=_parity(a["decode"], f"{where_a}.decode") if a.get("decode") is not None else None,
        )
    return Manifest(model=model, signature=signature, artifacts=artifacts, updated=raw.get("updated", ""))


def _parity(p, where: str) -> Parity:
    if not isinstance(p, dict) or p.get("verdict") not in VERDICTS:
        raise BundleError(f"manifest: {where}.verdict must be one of {VERDICTS}")
    return Parity(**{k: p[k] for k in ("verdict", "method", "tolerance", "cases", "worst", "notes") if k in p})


def _check_methods(signature: dict) -> list[str]:
    """The names of the signature's methods, each a plain identifier with inputs/state/outputs lists, and
    the decode roles naming only them."""
    from runtimes.decode import name_problem, roles_problem

    methods = signature.get("methods", {})
    if not isinstance(methods, dict):
        raise BundleError("manifest: signature.methods should be an object; re-export the bundle")
    for name, m in methods.items():
        why = name_problem(name)
        if why:
            raise BundleError(f"manifest: {why}; re-export the bundle")
        for key in ("inputs", "state", "outputs"):
            _require(m if isinstance(m, dict) else {}, key, list, f"signature.methods.{name}")
    decode = signature.get("decode", {})
    why = roles_problem(decode, list(methods)) if isinstance(decode, dict) else "signature.decode should be an object"
    if why:
        raise BundleError(f"manifest: {why}; re-export the bundle")
    return list(methods)


def check_file(f, where: str) -> dict:
    """A file entry's fields, exactly typed: path a string, sha256 64 hex digits, size a whole number >= 0."""
    if not isinstance(f, dict) or not {"path", "sha256", "size"} <= set(f):
        raise BundleError(f"manifest: every file of {where} needs path, sha256 and size")
    path, digest, size = f["path"], f["sha256"], f["size"]
    if not isinstance(path, str) or not isinstance(digest, str) or not SHA256.fullmatch(digest) \
            or type(size) is not int or size < 0:
        raise BundleError(f"manifest: a file of {where} has a malformed entry (path a string, sha256 64 lower-case "
                          "hex digits, size a whole number); re-export the bundle")
    return {"path": path, "sha256": digest, "size": size}
