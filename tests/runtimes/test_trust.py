"""Signed bundles (runtimes.trust): code-bearing artifacts load only from a bundle signed by a trusted key, or
on an explicit opt-in; data-only ones from any intact bundle; tampering after signing is caught. The real
model-signing library, keys made in tmp directories (NEAT_HOME points there)."""
import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import runtimes
from runtimes import trust
from runtimes.errors import BackendUnavailable, SignatureError, UntrustedCode

sys.path.insert(0, str(Path(__file__).parents[1] / "exporters"))
from toy import toy_spec  # noqa: E402

REFUSED = "not signed by a trusted key"


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory):
    """The toy module exported to exported, onnx and cpu (AOTInductor: code), unsigned; built once."""
    from exporters.build import export_bundle

    out = tmp_path_factory.mktemp("trust") / "bundle"
    outcomes = export_bundle(toy_spec(), ["exported", "onnx", "cpu"], out, "fp32", {}, sign=False)
    assert all(o.ok for o in outcomes), [(o.key, o.message) for o in outcomes]
    assert not (out / trust.SIGNATURE).exists()
    return out


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(trust.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv(trust.TRUST_UNSIGNED_ENV, raising=False)
    return tmp_path / "home"


@pytest.fixture
def bundle(unsigned, tmp_path, home):
    dst = tmp_path / "bundle"
    shutil.copytree(unsigned, dst)
    return dst


def foreign_key(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A key pair made under another NEAT_HOME: not trusted by this one. (private, public)"""
    mine = trust.home()
    monkeypatch.setenv(trust.HOME_ENV, str(tmp_path / "elsewhere"))
    private = trust.own_key()
    monkeypatch.setenv(trust.HOME_ENV, str(mine))
    return private, private.with_suffix(".pub")


def skipped(session) -> dict:
    return {c.key: c.reason for c in session.backend.skipped}


def test_unsigned_code_refused_by_default_data_still_loads(bundle):
    session = runtimes.load(bundle)
    assert session.backend.key == "onnx-fp32"
    assert REFUSED in skipped(session)["cpu-fp32"] and "--trust-unsigned" in skipped(session)["cpu-fp32"]
    with pytest.raises(UntrustedCode, match=REFUSED):
        runtimes.load(bundle, backend="cpu")
    assert runtimes.load(bundle, backend="exported").backend.key == "exported-fp32"  # .pt2 counts as data


def test_unsigned_code_loads_on_opt_in(bundle, monkeypatch):
    assert runtimes.load(bundle, trust="unsigned").backend.key == "cpu-fp32"
    monkeypatch.setenv(trust.TRUST_UNSIGNED_ENV, "1")
    assert runtimes.load(bundle).backend.key == "cpu-fp32"
    with pytest.raises(ValueError, match="list of public key paths"):
        runtimes.load(bundle, trust="yes")


def test_signed_by_own_key_loads(bundle, home):
    key = trust.own_key()
    assert key.stat().st_mode & 0o777 == 0o600
    assert trust.own_key() == key and len(list((home / "trusted").iterdir())) == 1  # made once
    trust.sign_bundle(bundle, key)
    assert trust.check_signature(bundle).state == "trusted"
    session = runtimes.load(bundle)
    assert session.backend.key == "cpu-fp32", str(session.backend)


def test_untrusted_key_refused_unless_given(bundle, tmp_path, monkeypatch):
    private, public = foreign_key(tmp_path, monkeypatch)
    trust.sign_bundle(bundle, private)
    session = runtimes.load(bundle)
    assert session.backend.key == "onnx-fp32"
    assert REFUSED in skipped(session)["cpu-fp32"] and "not among" in skipped(session)["cpu-fp32"]
    assert runtimes.load(bundle, trust=[public]).backend.key == "cpu-fp32"
    assert runtimes.load(bundle, trust="unsigned").backend.key == "cpu-fp32"  # the opt-in covers it
    trust.trust_key(public)
    assert runtimes.load(bundle).backend.key == "cpu-fp32"


def _replace(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


def _cpu_file(bundle: Path) -> Path:
    return next(p for p in (bundle / "cpu-fp32").rglob("*") if p.is_file())


def _onnx_file(bundle: Path) -> Path:
    return next(p for p in (bundle / "onnx-fp32").rglob("*.onnx"))


def tamper_manifest(bundle: Path) -> None:
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["artifacts"]["cpu-fp32"]["parity"]["notes"] = "changed"
    (bundle / "manifest.json").write_text(json.dumps(doc, indent=2))


def swap_code(bundle: Path) -> None:
    """What an attacker does: replace the code and write its hash into the manifest."""
    import hashlib

    f = _cpu_file(bundle)
    data = f.read_bytes() + b"\0"
    _replace(f, data)
    doc = json.loads((bundle / "manifest.json").read_text())
    rel = f.relative_to(bundle).as_posix()
    entry = next(e for e in doc["artifacts"]["cpu-fp32"]["files"] if e["path"] == rel)
    entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (bundle / "manifest.json").write_text(json.dumps(doc, indent=2))


def tamper_signature(bundle: Path) -> None:
    sig = json.loads((bundle / trust.SIGNATURE).read_text())
    payload = sig["dsseEnvelope"]["payload"]
    sig["dsseEnvelope"]["payload"] = payload[:40] + ("A" if payload[40] != "A" else "B") + payload[41:]
    (bundle / trust.SIGNATURE).write_text(json.dumps(sig))


@pytest.mark.parametrize("tamper", [tamper_manifest, swap_code, tamper_signature])
def test_manifest_or_signature_changed_after_signing_refuses_code(bundle, tamper):
    trust.sign_bundle(bundle, trust.own_key())
    tamper(bundle)
    assert trust.check_signature(bundle).state == "invalid"
    for opt_in in (None, "unsigned"):  # the opt-in is for unsigned bundles, not for ones changed after signing
        session = runtimes.load(bundle, trust=opt_in)
        assert session.backend.key == "onnx-fp32"  # data-only artifacts load from any intact bundle
        assert "does not verify" in skipped(session)["cpu-fp32"]
    with pytest.raises(UntrustedCode, match="does not verify"):
        runtimes.load(bundle, backend="cpu-fp32")
    with pytest.raises(SignatureError, match="does not verify"):
        trust.require_signature(bundle)


@pytest.mark.parametrize("which", [_cpu_file, _onnx_file])
def test_file_changed_after_signing_is_caught_by_its_signed_hash(bundle, which):
    trust.sign_bundle(bundle, trust.own_key())
    f = which(bundle)
    _replace(f, f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1]))
    assert trust.check_signature(bundle).state == "trusted"  # the manifest is as signed; the file is not
    with pytest.raises(BackendUnavailable, match="does not match its sha256"):
        runtimes.load(bundle, backend=f.relative_to(bundle).parts[0])
    with pytest.raises(SignatureError, match="not intact"):
        trust.sign_bundle(bundle, trust.own_key())  # nothing is signed that does not match its manifest


def test_exporter_signs_with_own_key_unless_turned_off(tmp_path, home, monkeypatch):
    from exporters.build import export_bundle

    out = tmp_path / "exp"
    export_bundle(toy_spec(), ["exported"], out, "fp32", {})
    assert trust.check_signature(out).state == "trusted"
    assert (home / "keys" / trust.OWN_KEY).stat().st_mode & 0o777 == 0o600
    assert [p.suffix for p in (home / "trusted").iterdir()] == [".pub"]
    monkeypatch.setenv(trust.SIGN_ENV, "0")
    export_bundle(toy_spec(), ["onnx"], out, "fp32", {})  # a new version: the old signature does not carry over
    assert trust.check_signature(out).state == "unsigned"


def test_cli_sign_verify_info(bundle, tmp_path, monkeypatch):
    from neat.cli import main

    cli = CliRunner()
    res = cli.invoke(main, ["verify", str(bundle), "--signature"])
    assert res.exit_code == 1 and REFUSED in res.output and "neat sign" in res.output
    info = json.loads(cli.invoke(main, ["info", str(bundle), "--json"]).output)
    assert info["chosen"] == "onnx-fp32"
    info = json.loads(cli.invoke(main, ["info", str(bundle), "--json", "--trust-unsigned"]).output)
    assert info["chosen"] == "cpu-fp32"

    private, public = foreign_key(tmp_path, monkeypatch)
    res = cli.invoke(main, ["sign", str(bundle), "--key", str(private)])
    assert res.exit_code == 0 and "bundle.sig" in res.output, res.output
    res = cli.invoke(main, ["verify", str(bundle), "--signature"])
    assert res.exit_code == 1 and "not among" in res.output
    res = cli.invoke(main, ["verify", str(bundle), "--signature", "--trusted-key", str(public)])
    assert f"signature: signed by trusted key {public}" in res.output, res.output
    assert "carries no reference weights" in res.output  # the toy bundle cannot be re-verified by `neat`

    assert cli.invoke(main, ["sign", str(bundle)]).exit_code == 0  # default: one's own key
    assert json.loads(cli.invoke(main, ["info", str(bundle), "--json"]).output)["chosen"] == "cpu-fp32"
    tamper_manifest(bundle)
    res = cli.invoke(main, ["verify", str(bundle), "--signature"])
    assert res.exit_code == 1 and "does not verify" in res.output
