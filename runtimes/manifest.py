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


def _require(raw: dict, key: str, kind, where: str):
    where = _printable(where)
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
    _check_model(model)
    _check_signature(signature)
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
            requirements=check_requirements(_require(a, "requirements", dict, where_a), where_a),
            build_seconds=_seconds(_require(a, "build_seconds", (int, float), where_a), where_a),
            parity=_parity(_require(a, "parity", dict, where_a), f"{where_a}.parity"),
            settings=_require(a, "settings", dict, where_a) if "settings" in a else {},
            methods={m: _parity(p, f"{where_a}.methods.{m}") for m, p in carried.items()},
            decode=_parity(a["decode"], f"{where_a}.decode") if a.get("decode") is not None else None,
        )
    updated = raw.get("updated", "")
    if not isinstance(updated, str):
        raise BundleError("manifest: updated should be a date string; re-export the bundle")
    return Manifest(model=model, signature=signature, artifacts=artifacts, updated=updated)


def _bad(where: str, should: str):
    return BundleError(f"manifest: {_printable(where)} should be {should}; re-export the bundle with `neat export`")


def _whole(x, lo: int = 0, hi: int = MAX_DIM) -> bool:
    return type(x) is int and lo <= x <= hi


def _seconds(x, where: str) -> float:
    if isinstance(x, bool) or not (isinstance(x, float) or _whole(x, 0, 2**53)) or not 0 <= x < float("inf"):
        raise _bad(f"{where}.build_seconds", "a finite number of seconds, 0 or more")
    return float(x)


PARITY_FIELDS = {"method": str, "tolerance": dict, "cases": list, "worst": dict, "notes": str}


def _parity(p, where: str) -> Parity:
    if not isinstance(p, dict) or p.get("verdict") not in VERDICTS:
        raise BundleError(f"manifest: {where}.verdict must be one of {VERDICTS}")
    if "method" not in p:
        raise BundleError(f"manifest: {where} has no 'method'; re-export the bundle with `neat export`")
    for key, kind in PARITY_FIELDS.items():
        if key in p and not isinstance(p[key], kind):
            raise _bad(f"{where}.{key}", f"{kind.__name__}")
    return Parity(**{k: p[k] for k in ("verdict", *PARITY_FIELDS) if k in p})


# the requirement fields the backends read (runtimes.backends.*.problem), and the type each must have; any
# other is a string, a whole number, or a list of strings
REQUIREMENTS = {"torch": str, "arch": str, "device": str, "cpu_isa": list, "compute_capability": str,
                "flavour": str, "tensorrt_version": str, "compute_capabilities": list, "loader": str}


def check_requirements(req: dict, where: str) -> dict:
    """An artifact's requirements, each value of the type its backend reads (BundleError naming the first not)."""
    for key, value in req.items():
        kind = REQUIREMENTS.get(key)
        plain = isinstance(value, str) or _whole(value, -MAX_DIM) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not plain or (kind is not None and not isinstance(value, kind)):
            should = {str: "a string", list: "a list of strings"}.get(kind, "a string, a whole number or a list of strings")
            raise _bad(f"{where}.requirements.{key}", should)
    return req


MODEL_FIELDS = {"name": str, "config": dict, "weights_sha256": str, "reference_loader": str, "tokens": dict}
TOKEN_IDS = ("bytes", "pad", "bos", "eos", "boi", "eoi", "first_code", "codes", "image_grid", "patch_px")


def _check_model(model: dict) -> None:
    """The model fields the runtimes read, exactly typed (others are carried as they are)."""
    for key, kind in MODEL_FIELDS.items():
        if key in model and not isinstance(model[key], kind):
            raise _bad(f"model.{key}", kind.__name__)
    if model.get("reference") is not None:
        check_file(model["reference"], "model.reference")
    tokens = model.get("tokens", {})
    for key in TOKEN_IDS:
        if key in tokens and not _whole(tokens[key], 0, MAX_DIM):
            raise _bad(f"model.tokens.{key}", "a whole number from 0")
    if "first_code" in tokens or "eoi" in tokens:  # image spans are decoded through the codebook
        grid, px = tokens.get("image_grid"), tokens.get("patch_px")
        if not (_whole(grid, 1, 64) and _whole(px, 1, 64)):
            raise _bad("model.tokens", "image_grid and patch_px (whole numbers 1..64) with first_code and eoi")
        book = tokens.get("codebook")
        if not (isinstance(book, list) and book and all(
                isinstance(c, list) and len(c) == px * px and all(type(v) in (int, float) for v in c) for c in book)):
            raise _bad("model.tokens.codebook", f"a non-empty list of codes of {px}x{px} numbers each")


def _check_tensors(items, where: str) -> None:
    """A list of tensor descriptions: name, dtype, shape ("batch" first or not at all, then sizes), range."""
    if not isinstance(items, list):
        raise _bad(where, "a list of tensor descriptions")
    for i, t in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise _bad(at, "an object with a name")
        if t.get("dtype") not in DTYPE_NAMES:
            raise _bad(f"{at}.dtype", f"one of {', '.join(DTYPE_NAMES)}")
        shape = t.get("shape")
        if not isinstance(shape, list) or len(shape) > 16 or not all(
                _whole(d) or (j == 0 and d == "batch") for j, d in enumerate(shape)):
            raise _bad(f"{at}.shape", 'a list of at most 16 sizes (whole numbers), "batch" first when batched')
        lo_hi = t.get("range")
        if "range" in t and not (isinstance(lo_hi, list) and len(lo_hi) == 2 and all(_whole(v, -MAX_DIM) for v in lo_hi)
                                 and lo_hi[0] < lo_hi[1]):
            raise _bad(f"{at}.range", "[low, high): two whole numbers, low < high")


def _check_signature(signature: dict) -> None:
    for key in ("inputs", "state", "outputs"):
        _check_tensors(_require(signature, key, list, "signature"), f"signature.{key}")
    dynamic = signature.get("dynamic", {})
    batch = dynamic.get("batch", {"min": 1, "max": 1}) if isinstance(dynamic, dict) else None
    if not (isinstance(batch, dict) and _whole(batch.get("min"), 1) and _whole(batch.get("max"), 1)
            and batch["min"] <= batch["max"]):
        raise _bad("signature.dynamic.batch", "{min, max}: whole numbers, 1 <= min <= max")
    if signature.get("init_state") is not None:
        check_file(signature["init_state"], "signature.init_state")


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
            where = f"signature.methods.{name}"
            _check_tensors(_require(m if isinstance(m, dict) else {}, key, list, where), f"{where}.{key}")
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
    if not isinstance(path, str) or not path.isprintable() or not isinstance(digest, str) or not SHA256.fullmatch(digest) \
            or type(size) is not int or size < 0:
        raise BundleError(f"manifest: a file of {where} has a malformed entry (path a printable string, sha256 64 lower-case "
                          "hex digits, size a whole number); re-export the bundle")
    return {"path": path, "sha256": digest, "size": size}
