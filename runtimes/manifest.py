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
DTYPE_NAMES = ("int32", "int64", "bool", "float32", "float16")  # the tensor dtypes a signature may name
MAX_DIM = 2**31 - 1  # a tensor dimension, batch bound or token id beyond this is not one a model was built with
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


def _printable(where: str) -> str:
    """A place in the manifest as one line (keys come from the file: a newline in one is shown escaped)."""
    return where if where.isprintable() else where.encode("unicode_escape").decode("ascii")


def parse_manifest(text: str, where: str = MANIFEST) -> Manifest:
    """Parse and validate a manifest's JSON text against the schema (runtimes.schema)."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where} is over {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest this tool wrote")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where} is not valid JSON ({exc}); re-export the bundle with `neat export`") from None
    except RecursionError:
        raise BundleError(f"{where} is nested too deeply to be a manifest; re-export the bundle") from None
    # the header says which schema the rest is read with: a file that is no manifest, or another version's,
    # is told so in those words rather than by its first field this version would refuse
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise BundleError(f"{where} is not a NEAT bundle manifest (no schema '{SCHEMA}')")
    version = raw.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BundleError(f"{where} has schema version {raw.get('schema_version')!r}; this version reads "
                          f"{SCHEMA_VERSION}: re-export the bundle with this version's `neat export`")
    from pydantic import ValidationError

    from runtimes.schema import ManifestSpec, bundle_error

    try:
        spec = ManifestSpec.model_validate(raw)
    except ValidationError as exc:
        raise bundle_error(exc) from None
    artifacts = {key: Artifact(
        target=a.target, precision=a.precision, files=[FileEntry(f.path, f.sha256, f.size) for f in a.files],
        toolchain=a.toolchain, requirements=a.requirements, build_seconds=a.build_seconds, parity=_parity(a.parity),
        settings=a.settings, methods={m: _parity(p) for m, p in a.methods.items()},
        decode=_parity(a.decode) if a.decode is not None else None,
    ) for key, a in spec.artifacts.items()}
    # model and signature are carried as they are in the file (the runtimes read them, and keys this version
    # does not know travel with them)
    return Manifest(model=raw["model"], signature=raw["signature"], artifacts=artifacts, updated=spec.updated)


def _parity(p) -> Parity:
    return Parity(verdict=p.verdict, method=p.method, tolerance=p.tolerance, cases=p.cases, worst=p.worst,
                  notes=p.notes)


# the requirement fields the backends read (runtimes.backends.*.problem), and the type each must have; any
# other is a string, a whole number, or a list of strings (runtimes.schema.Requirements)
REQUIREMENTS = {"torch": str, "arch": str, "device": str, "cpu_isa": list, "compute_capability": str,
                "flavour": str, "tensorrt_version": str, "compute_capabilities": list, "loader": str,
                "ort_optimized": str}


def check_requirements(req: dict, where: str) -> dict:
    """An artifact's requirements, each value of the type its backend reads (BundleError naming the first not)."""
    from pydantic import ValidationError

    from runtimes.schema import REQUIREMENTS_ADAPTER, bundle_error

    try:
        REQUIREMENTS_ADAPTER.validate_python(req)
    except ValidationError as exc:
        raise bundle_error(exc, f"{where}.requirements") from None
    return req


def check_file(f, where: str) -> dict:
    """A file entry (at `where` in the manifest), exactly typed: path a plain relative path inside the bundle,
    sha256 64 lower-case hex digits, size a whole number >= 0."""
    from pydantic import ValidationError

    from runtimes.schema import FILE, bundle_error

    try:
        entry = FILE.validate_python(f)
    except ValidationError as exc:
        raise bundle_error(exc, where) from None
    return {"path": entry.path, "sha256": entry.sha256, "size": entry.size}
