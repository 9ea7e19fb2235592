"""Who made a bundle: signing it with a key (OpenSSF `model-signing`), checking its signature against the
trusted public keys, and the policy deciding which artifacts may load from it.

A bundle's hashes prove it is intact, not who made it. The signature (`bundle.sig`, a Sigstore bundle written
by `model-signing` with an elliptic-curve key) covers `manifest.json`, and through the manifest every file's
sha256 and size, which are checked before any artifact loads (runtimes.bundle); the signature file itself is
outside what it signs. Policy:

- data-only artifacts (onnx, coreml, and the exported .pt2, which runtimes.backends.pt2_safe loads without
  unpickling anything or running code from the file; the eager reference is safetensors weights and an
  installed loader) load from any bundle whose hashes match;
- code-bearing artifacts (the cpu and cuda AOTInductor packages, shared libraries; TensorRT engines, which
  can carry plugins) load only from a bundle signed by a trusted key, or when the caller opts in explicitly
  (trust="unsigned", `--trust-unsigned`, or NEAT_TRUST_UNSIGNED=1). A bundle whose signature does not verify
  (changed after signing) never loads them.

Trusted keys: the public keys (PEM, *.pub or *.pem) in $NEAT_HOME/trusted/ (NEAT_HOME defaults to
~/.config/neat) and those a caller passes. The exporter signs what it writes with the user's own key,
created on first use in $NEAT_HOME/keys/ (mode 0600) with its public key trusted, so one's own exports load
with no extra step; NEAT_SIGN=0 turns that off. `model-signing` and `cryptography` are imported only here,
and only when a key or a signature is used: `import runtimes` needs neither.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runtimes.errors import SignatureError
from runtimes.manifest import MANIFEST

log = logging.getLogger("runtimes")
SIGNATURE = "bundle.sig"
CODE_BEARING = frozenset({"cpu", "cuda", "tensorrt"})   # manifest targets whose artifacts are executable code
UNSIGNED = "unsigned"                                   # trust=UNSIGNED: the caller accepts unsigned code
HOME_ENV, SIGN_ENV, TRUST_UNSIGNED_ENV = "NEAT_HOME", "NEAT_SIGN", "NEAT_TRUST_UNSIGNED"
OWN_KEY = "signing-key.pem"                             # the user's private key, in $NEAT_HOME/keys/
MAX_SIGNATURE_BYTES = 1 << 20
_OFF = ("0", "false", "no", "off")
_NO_LIBRARY = "model-signing is not installed: `pip install model-signing`"


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".config" / "neat")


def trusted_dir() -> Path:
    return home() / "trusted"


def keys_dir() -> Path:
    return home() / "keys"


def _serialization():
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise SignatureError(_NO_LIBRARY + " (it brings `cryptography`)") from None
    return serialization


def _public_pem(key) -> bytes:
    s = _serialization()
    return key.public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)


def key_id(public_key: str | Path) -> str:
    """The id `model-signing` records in a signature for this public key: sha256 of its PEM, in hex."""
    try:
        key = _serialization().load_pem_public_key(Path(public_key).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"{public_key} is not a PEM public key ({exc}); give the .pub file of an "
                             "elliptic-curve key pair") from None
    return hashlib.sha256(_public_pem(key)).hexdigest()


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Write `path` whole or not at all, never replacing it (False when it already exists)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.close(fd)
        os.link(tmp, path)  # atomic, and fails if another process made the file first
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def trust_key(public_key: str | Path) -> Path:
    """Copy a public key into the trust directory (named by its id); returns where it now is."""
    dst = trusted_dir() / f"key-{key_id(public_key)[:16]}.pub"  # the same name is the same key
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.is_file():
        _write_new(dst, Path(public_key).read_bytes(), 0o644)
    return dst


def own_key() -> Path:
    """The user's private key, created on first use (EC P-256, mode 0600) with its public key trusted.
    Safe when several processes ask at once: one key is created and all of them use it."""
    s = _serialization()
    from cryptography.hazmat.primitives.asymmetric import ec

    path = keys_dir() / OWN_KEY
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = ec.generate_private_key(ec.SECP256R1())
        _write_new(path, new.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()), 0o600)
    try:
        key = s.load_pem_private_key(path.read_bytes(), None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not an unencrypted PEM private key ({exc}): move it away and a new "
                             f"key is made, or set {SIGN_ENV}=0 to export unsigned bundles") from None
    public = path.with_suffix(".pub")
    if not public.is_file():
        _write_new(public, _public_pem(key.public_key()), 0o644)
    trust_key(public)
    return path


def auto_sign_key() -> Path | None:
    """The key the exporter signs with: the user's own, or None when NEAT_SIGN=0 turns signing off."""
    return None if os.environ.get(SIGN_ENV, "1").strip().lower() in _OFF else own_key()


def sign_bundle(bundle: str | Path, private_key: str | Path, password: str | None = None,
                check_files: bool = True) -> Path:
    """Sign `bundle` (its manifest, and through it every file's hash) with an elliptic-curve private key
    (PEM); writes bundle.sig inside it. With check_files, refuses a bundle whose files do not match its
    manifest (a signature vouches for what is there)."""
    from runtimes.bundle import file_problems, read_manifest

    bundle, private_key = Path(bundle), Path(private_key)
    manifest = read_manifest(bundle)
    if check_files:
        bad = [p for art in manifest.artifacts.values() for p in file_problems(bundle, art)]
        if bad:
            raise SignatureError(f"{bundle} is not intact, so it is not signed: {'; '.join(bad)}. "
                                 "Re-export it with `neat export`, then sign it")
    if not private_key.is_file():
        raise SignatureError(f"no private key at {private_key}: give a PEM elliptic-curve private key "
                             f"(yours is made on first export in {keys_dir()})")
    try:
        from model_signing import hashing, signing
    except ImportError:
        raise SignatureError(f"cannot sign {bundle}: {_NO_LIBRARY}, or set {SIGN_ENV}=0 to export unsigned "
                             "bundles") from None
    out = bundle / SIGNATURE
    tmp = bundle / f".{SIGNATURE}.tmp"
    try:
        config = signing.Config().use_elliptic_key_signer(private_key=private_key, password=password)
        config.set_hashing_config(hashing.Config().use_file_serialization(hashing_algorithm="sha256"))
        config.sign(bundle / MANIFEST, tmp)
    except (ValueError, TypeError) as exc:
        tmp.unlink(missing_ok=True)
        raise SignatureError(f"cannot sign {bundle} with {private_key}: {exc}. Give an elliptic-curve "
                             "(P-256, P-384 or P-521) private key in PEM, and its password if it has one") from None
    os.replace(tmp, out)
    return out


def trusted_keys(extra=()) -> list[Path]:
    """The public keys in the trust directory, then those given."""
    d = trusted_dir()
    found = sorted(p for p in d.iterdir() if p.suffix in (".pub", ".pem") and p.is_file()) if d.is_dir() else []
    return found + [Path(k) for k in extra]


@dataclass
class Verdict:
    """What a bundle's signature says: state is trusted, unsigned, untrusted, invalid, or unchecked."""

    state: str
    detail: str
    key: Path | None = None

    @property
    def signed(self) -> bool:
        return self.state == "trusted"


def _signature_key_id(sig: Path) -> str:
    if sig.stat().st_size > MAX_SIGNATURE_BYTES:
        raise ValueError(f"over {MAX_SIGNATURE_BYTES >> 20} MiB")
    return json.loads(sig.read_bytes())["verificationMaterial"]["publicKey"]["hint"]


def check_signature(bundle: str | Path, keys=(), manifest=None) -> Verdict:
    """Check `bundle`'s signature against the trusted keys plus `keys` (paths of public keys). With the
    manifest already read (runtimes.bundle.read_manifest), also that the signed manifest is that one."""
    bundle = Path(bundle)
    sig = bundle / SIGNATURE
    if not sig.is_file():
        return Verdict("unsigned", f"{bundle} carries no signature ({SIGNATURE})")
    try:
        wanted = _signature_key_id(sig)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Verdict("invalid", f"{sig} is not a signature this tool reads ({type(exc).__name__}: {exc})")
    known = {}
    for k in trusted_keys(keys):
        try:
            known.setdefault(key_id(k), k)
        except SignatureError as exc:
            log.warning("%s; it is not used", exc)
    if wanted not in known:
        return Verdict("untrusted", f"it is signed by key {wanted[:16]}, which is not among the {len(known)} "
                                    f"trusted key(s) (in {trusted_dir()} or given)")
    try:
        from model_signing import verifying
    except ImportError:
        return Verdict("unchecked", f"its signature cannot be checked: {_NO_LIBRARY}")
    text = (bundle / MANIFEST).read_bytes()
    with tempfile.TemporaryDirectory(prefix="neat-verify-") as tmp:
        copy = Path(tmp) / MANIFEST  # the very bytes checked are the bytes compared with `manifest` below
        copy.write_bytes(text)
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=known[wanted]).verify(copy, sig)
        except Exception as exc:  # the library raises ValueError, InvalidSignature, protobuf and JSON errors
            return Verdict("invalid", f"its signature does not verify: the bundle was changed after it was "
                                      f"signed ({type(exc).__name__}: {str(exc)[:300]})", known[wanted])
    if manifest is not None:
        from runtimes.manifest import parse_manifest

        if parse_manifest(text.decode("utf-8"), str(bundle / MANIFEST)).to_json() != manifest.to_json():
            return Verdict("invalid", f"{MANIFEST} changed while it was being loaded", known[wanted])
    return Verdict("trusted", f"signed by trusted key {known[wanted]}", known[wanted])


def _keys(trust) -> tuple[bool, tuple]:
    """(opted in to unsigned code, extra public keys) from load(..., trust=...)."""
    if trust is None:
        return os.environ.get(TRUST_UNSIGNED_ENV, "").strip().lower() not in ("", *_OFF), ()
    if trust == UNSIGNED:
        return True, ()
    if isinstance(trust, (str, Path)):
        raise ValueError(f"trust={trust!r}: give None, \"unsigned\", or a list of public key paths")
    return False, tuple(trust)


def refusal(bundle: Path, verdict: Verdict, opted_in: bool) -> str:
    """Why code-bearing artifacts may not load from the bundle ('' when they may)."""
    if verdict.state == "trusted" or (opted_in and verdict.state != "invalid"):
        return ""
    if verdict.state == "invalid":
        return (f"refused: {verdict.detail}. Re-export the bundle with `neat export`, or re-sign it with "
                f"`neat sign {bundle} --key KEY` if the change is yours")
    return (f"not signed by a trusted key ({verdict.detail}): sign it with `neat sign {bundle} --key KEY`, "
            "trust its key, or pass trust=\"unsigned\" / --trust-unsigned")


def code_refusal(bundle: Path, manifest=None, trust=None) -> str:
    """Why the bundle's code-bearing artifacts may not load under `trust` (as in runtimes.load; '' when
    they may)."""
    opted_in, keys = _keys(trust)
    if opted_in and not (bundle / SIGNATURE).is_file():
        return ""
    return refusal(bundle, check_signature(bundle, keys, manifest), opted_in)


def screen(candidates, bundle: Path, manifest, trust=None) -> dict[str, str]:
    """Mark the usable code-bearing candidates (runtimes.select.Candidate) of a ranking unusable when the
    policy refuses them; returns {key: reason} of those refused. The signature is checked only when such a
    candidate is there."""
    _keys(trust)  # a wrong `trust` is an error even when nothing here is code
    code = [c for c in candidates if c.usable and c.target in CODE_BEARING]
    why = code_refusal(bundle, manifest, trust) if code else ""
    if not why:
        return {}
    for c in code:
        c.usable, c.reason = False, why
    return {c.key: why for c in code}


def require_signature(bundle: str | Path, keys=()) -> Verdict:
    """The verdict on a bundle signed by a trusted key (or one of `keys`); SignatureError saying why not."""
    from runtimes.bundle import read_manifest

    bundle = Path(bundle)
    verdict = check_signature(bundle, keys, read_manifest(bundle))
    if not verdict.signed:
        raise SignatureError(refusal(bundle, verdict, False))
    return verdict


@contextlib.contextmanager
def unsigned_allowed(allow: bool = True):
    """Within the block (and the processes it starts), runtimes.load(trust=None) also loads unsigned code."""
    old = os.environ.get(TRUST_UNSIGNED_ENV)
    if allow:
        os.environ[TRUST_UNSIGNED_ENV] = "1"
    try:
        yield
    finally:
        if allow and old is None:
            del os.environ[TRUST_UNSIGNED_ENV]
        elif allow:
            os.environ[TRUST_UNSIGNED_ENV] = old
