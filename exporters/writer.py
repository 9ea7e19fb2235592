"""Writing a bundle, atomically: a new version is built in a temporary sibling directory and renamed into
place, so an interrupted or failed export leaves the previous bundle intact (runtimes.bundle reads it)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np

from runtimes.bundle import backup_name, read_manifest, recover
from runtimes.errors import BundleError
from runtimes.manifest import INIT_STATE, MANIFEST, REFERENCE_DIR, Artifact, FileEntry, Manifest, sha256_file


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
        and the name of the installed entry point that rebuilds the model from them (runtimes.backends.eager)."""
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

    def commit(self, sign_key: Path | None = None) -> None:
        """Write the manifest, sign the new version with `sign_key` (runtimes.trust) when given, swap it in."""
        shutil.rmtree(self.work / ".staging", ignore_errors=True)
        self.manifest.updated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        (self.work / MANIFEST).write_text(self.manifest.to_json())
        if sign_key is not None:
            from runtimes.trust import sign_bundle

            sign_bundle(self.work, sign_key, check_files=False)  # the hashes were just computed from the files
        share_as_umask(self.work)  # mkdtemp made it 0700 (and some libraries write 0600 files)
        backup = backup_name(self.bundle)
        if backup.exists():
            shutil.rmtree(backup)
        if self.bundle.exists():
            os.replace(self.bundle, backup)
        os.replace(self.work, self.bundle)
        if backup.exists():
            shutil.rmtree(backup)


def current_umask(status: str = "/proc/self/status") -> int:
    """This process's umask, without changing it where /proc says it (os.umask can only be read by setting it,
    which for an instant would apply to files other threads create)."""
    try:
        for line in Path(status).read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # the fallback: set, then restored at once (the strictest value meanwhile)
    os.umask(mask)
    return mask


def share_as_umask(root: Path) -> None:
    """Give `root` and everything under it the permissions the user's umask allows, as if created by them
    normally: each owner permission is extended to group and others, then the umask is taken away (0700
    directories and 0600 files become 0755 and 0644 under umask 022). Symbolic links are left alone."""
    mask = current_umask()

    def widen(path: str) -> None:
        owner = os.lstat(path).st_mode & 0o700
        os.chmod(path, (owner | owner >> 3 | owner >> 6) & ~mask & 0o777)

    widen(str(root))
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                widen(path)


STALE_UNOWNED_S = 3600  # a .partial directory naming no process (an older version's) counts as stale after this


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_partials(bundle: Path) -> list[Path]:
    """Remove the work directories of earlier exports of `bundle` that were killed before they could clean up
    (`.<name>.<pid>.<random>.partial`, the pid no longer running; or, naming no pid, over an hour old). Those
    of exports still running are left alone. Returns what was removed."""
    import time

    removed = []
    for d in bundle.parent.glob(f".{bundle.name}.*.partial"):
        middle = d.name[len(bundle.name) + 2:-len(".partial")].split(".")  # [pid, random] or [random]
        if len(middle) == 2 and middle[0].isdigit():
            stale = not _alive(int(middle[0]))
        elif len(middle) == 1:
            stale = time.time() - d.stat().st_mtime > STALE_UNOWNED_S
        else:  # another bundle's, whose name starts with this one's and a dot
            continue
        if d.is_dir() and not d.is_symlink() and stale:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


@contextlib.contextmanager
def write_bundle(bundle: str | Path, model: dict, signature: dict) -> Iterator[BundleWriter]:
    """Open a bundle for writing. A bundle of another model (other weights or config) is not mixed with:
    its artifacts are dropped, since they would no longer match the reference. Work directories left by
    earlier exports of this bundle that were killed are removed first (`remove_stale_partials`)."""
    bundle = Path(bundle)
    recover(bundle)
    if bundle.exists() and not (bundle / MANIFEST).is_file():
        if any(bundle.iterdir()):
            raise BundleError(f"{bundle} exists and is not a bundle (no {MANIFEST}); choose another --out")
    bundle.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(bundle)
    work = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.{os.getpid()}.", suffix=".partial", dir=bundle.parent))
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
