"""Loading a bundle for this machine, and the one Session interface every backend shares."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from runtimes import backends
from runtimes.bundle import Manifest, read_init_state, read_manifest, reference_path, verify_files
from runtimes.errors import BackendUnavailable, InputError, RunFailed, RuntimeLayerError, UntrustedCode
from runtimes.profile import HardwareProfile, detect
from runtimes.select import EAGER, Candidate, eager_requirements, rank
from runtimes.trust import screen

log = logging.getLogger("runtimes")
DTYPES = {"int32": np.int32, "int64": np.int64, "bool": np.bool_, "float32": np.float32, "float16": np.float16}


def _batched(info: dict) -> bool:
    return bool(info["shape"]) and info["shape"][0] == "batch"


@dataclass
class Choice:
    """Which backend a Session runs on, and why: the chosen candidate and every one skipped before it."""

    key: str
    target: str
    reason: str
    skipped: list[Candidate] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.key}: {self.reason}"]
        lines += [f"  skipped {c.key}: {c.reason}" for c in self.skipped]
        return "\n".join(lines)


def _runner(bundle: Path, manifest: Manifest, cand: Candidate, profile: HardwareProfile, method: str = "") -> Callable:
    """The chunk forward of a candidate, or with `method` one of its further entry points."""
    if cand.target == EAGER:
        needs = eager_requirements(manifest) | ({"method": method} if method else {})
        return backends.get(EAGER).load(reference_path(bundle, manifest), needs, profile)
    art = manifest.artifacts[cand.key]
    verify_files(bundle, art)  # hashes checked right before loading anything executable
    return backends.get(art.target).load(bundle / cand.key / method if method else bundle / cand.key,
                                         art.requirements, profile)


def _fingerprint(profile: HardwareProfile, manifest: Manifest) -> str:
    import hashlib
    import json

    blob = json.dumps([profile.to_dict(), manifest.model.get("weights_sha256"),
                       sorted((k, [f.sha256 for f in a.files]) for k, a in manifest.artifacts.items())],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _autotune_cache() -> Path:
    import os

    return Path(os.environ.get("NEAT_CACHE_DIR", Path.home() / ".cache" / "neat")) / "autotune.json"


def _autotune(bundle: Path, manifest: Manifest, ranked: list[Candidate], profile: HardwareProfile) -> list[Candidate]:
    """Reorder the usable candidates fastest first, timing each briefly once per machine and bundle."""
    import json

    cache_path = _autotune_cache()
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    key = _fingerprint(profile, manifest)
    if key not in cache:
        timings = {}
        for cand in ranked:
            if not (cand.usable and cand.preferred):
                continue
            try:
                session = Session(bundle, manifest, _runner(bundle, manifest, cand, profile),
                                  Choice(cand.key, cand.target, cand.reason))
                session.timed(1, runs=2)  # warm-up
                timings[cand.key] = session.timed(1, runs=5)
            except Exception:  # a candidate that fails here simply is not the fastest
                continue
        cache[key] = timings
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1))
    timings = cache[key]
    for cand in ranked:
        if cand.key in timings:
            cand.reason += f"; measured {timings[cand.key] * 1e3:.2f} ms per chunk"
    return sorted(ranked, key=lambda c: (c.key not in timings, timings.get(c.key, 0.0)))


def load(bundle: str | Path, backend: str | None = None, profile: HardwareProfile | None = None,
         autotune: bool = False, trust=None) -> "Session":
    """Open a bundle on this machine: the best usable artifact, falling back along the preference chain.

    backend: an artifact key ("onnx-fp32"), a target ("onnx"), or "eager", to force one (an error says
    why it cannot run here). autotune: time every usable candidate briefly (once per machine and bundle,
    cached in ~/.cache/neat/autotune.json) and take the fastest instead of the preference order.
    trust: which code-bearing artifacts (cpu, cuda, tensorrt) may load (runtimes.trust): None, those of a
    bundle signed by a key in $NEAT_HOME/trusted/; a list of public key paths, those keys too; "unsigned",
    also unsigned bundles' (an opt-in). Refused ones are skipped, or raise UntrustedCode when forced."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    profile = profile or detect()
    ranked = rank(manifest, profile)  # files are hashed only for the artifact about to load (_runner)
    if backend is not None:
        wanted = [c for c in ranked if backend in (c.key, c.target)]
        if not wanted:
            raise BackendUnavailable(f"{bundle} has no artifact {backend!r}; it has "
                                     f"{', '.join(c.key for c in ranked)}")
        ranked = wanted
    # code-bearing artifacts of an untrusted bundle (the signature is checked only when one is a candidate)
    refused = screen(ranked, bundle, manifest, trust)
    if backend is not None and not any(c.usable for c in ranked) and refused:
        raise UntrustedCode(f"{bundle}: {backend} is code-bearing, and the bundle is {next(iter(refused.values()))}")
    if autotune and backend is None:
        ranked = _autotune(bundle, manifest, ranked, profile)
    skipped: list[Candidate] = []
    for cand in ranked:
        if not cand.usable or (backend is None and not cand.preferred):
            skipped.append(cand)
            continue
        try:
            run = _runner(bundle, manifest, cand, profile)
        except Exception as exc:  # a backend failing to load is a reason to fall back, not to stop
            said = " ".join(str(exc).split())[:500]  # one line, whatever the library's message
            skipped.append(Candidate(cand.key, cand.target, False, f"failed to load: {type(exc).__name__}: {said}"))
            log.warning("%s: not loaded (%s: %s); falling back to the next artifact", cand.key,
                        type(exc).__name__, exc)
            continue
        return Session(bundle, manifest, run, Choice(cand.key, cand.target, cand.reason, skipped),
                       lambda method, cand=cand: _runner(bundle, manifest, cand, profile, method))
    reasons = "; ".join(f"{c.key}: {c.reason}" for c in skipped)
    raise BackendUnavailable(f"nothing in {bundle} can run here ({reasons})")


class Session:
    """run / new_state / generate / stream over one backend; inputs are checked before the backend sees them.
    Calls are serialised by a lock, so one Session may be shared by several threads."""

    def __init__(self, bundle: Path, manifest: Manifest, run: Callable, backend: Choice,
                 load_method: Callable[[str], Callable] | None = None):
        self.bundle, self.manifest, self.backend = bundle, manifest, backend
        self._run, self._lock = run, threading.Lock()
        self._load_method, self._methods = load_method, {}
        sig = manifest.signature
        self._inputs, self._state, self._outputs = sig["inputs"], sig["state"], sig["outputs"]
        dyn = sig.get("dynamic", {}).get("batch", {"min": 1, "max": 1})
        self.batch_bounds = (dyn["min"], dyn["max"])
        self._init = read_init_state(bundle, manifest)
        self.tokens = manifest.model.get("tokens", {})

    # ----- state and one chunk -----------------------------------------------------------------------
    def new_state(self, batch: int = 1) -> list[np.ndarray]:
        self._check_batch(batch)
        return [np.repeat(s, batch, axis=0) if _batched(info) else s.copy() for s, info in zip(self._init, self._state)]

    def _check_batch(self, batch: int) -> None:
        lo, hi = self.batch_bounds
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, (bool, np.bool_)):
            raise InputError(f"batch={batch!r}: give a whole number from {lo} to {hi}")
        if not lo <= batch <= hi:
            raise InputError(f"batch {batch} is outside this bundle's bounds {lo}..{hi}: split the batch, or "
                             f"re-export with `neat export ... --batch {min(lo, batch)}:{max(hi, batch)}`")

    def _check(self, arrays, infos: list[dict], what: str, batch: int | None) -> int:
        if not isinstance(arrays, (list, tuple)):
            raise InputError(f"the {what} must be a list of numpy arrays, got {type(arrays).__name__}"
                             + (": start from session.new_state(batch)" if what == "state" else ""))
        if len(arrays) != len(infos):
            raise InputError(f"expected {len(infos)} {what} tensors ({', '.join(i['name'] for i in infos)}), "
                             f"got {len(arrays)}")
        for a, info in zip(arrays, infos):
            if not isinstance(a, np.ndarray):
                raise InputError(f"{info['name']} must be a numpy array, got {type(a).__name__}")
            want = DTYPES[info["dtype"]]
            if a.dtype != want:
                raise InputError(f"{info['name']} has dtype {a.dtype}, expected {info['dtype']}: "
                                 f"convert with .astype(np.{info['dtype']})")
            if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
                raise InputError(f"{what} tensor {info['name']} holds NaN or Inf" + (
                    ": a state that diverged or was corrupted; start again from session.new_state(batch)"
                    if what == "state" else ": give finite values"))
            if not _batched(info):
                if tuple(a.shape) != tuple(info["shape"]):
                    raise InputError(f"{info['name']} has shape {a.shape}, expected {tuple(info['shape'])} (no batch)")
                continue
            shape = tuple(info["shape"][1:])
            if a.ndim != len(shape) + 1 or tuple(a.shape[1:]) != shape:
                raise InputError(f"{info['name']} has shape {a.shape}, expected (batch, {', '.join(map(str, shape))})")
            batch = a.shape[0] if batch is None else batch
            if a.shape[0] != batch:
                raise InputError(f"{info['name']} has batch {a.shape[0]}, the other inputs have {batch}")
            if "range" in info and a.size:
                lo, hi = info["range"]
                if a.min() < lo or a.max() >= hi:
                    raise InputError(f"{info['name']} holds ids outside [{lo}, {hi}) "
                                     f"(min {a.min()}, max {a.max()})")
        return batch

    def run(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One chunk: tokens int32 (B, T) and the state -> logits (B, T, V) and the new state."""
        batch = self._check([tokens], self._inputs, "input", None)
        self._check_batch(batch)
        self._check(state, self._state, "state", batch)
        outs = self._execute(tokens, *state)
        n = len(self._outputs)
        return np.asarray(outs[0]), [np.asarray(s) for s in outs[n:]]

    def _execute(self, *arrays: np.ndarray) -> list:
        """The backend on checked inputs; what it raises, or outputs other than the signature's, is RunFailed."""
        try:
            with self._lock:
                outs = list(self._run(*arrays))
        except RuntimeLayerError:
            raise
        except Exception as exc:  # the library's own error, on inputs that match the signature
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise RunFailed(f"{self.backend.key} failed on inputs that match the bundle's signature "
                            f"({type(exc).__name__}: {first}): the artifact and its manifest disagree; "
                            "re-export the bundle with `neat export`") from exc
        want = len(self._outputs) + len(self._state)
        if len(outs) != want:
            raise RunFailed(f"{self.backend.key} returned {len(outs)} arrays, the signature lists {want} outputs "
                            "and new state: the artifact and its manifest disagree; re-export the bundle")
        return outs

    def call(self, *inputs: np.ndarray, state: list[np.ndarray] | None = None
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Any model: the inputs in signature order, and the state (default: the initial state at the inputs'
        batch) -> (outputs, new state), each a list in signature order."""
        batch = self._check(list(inputs), self._inputs, "input", None)
        if batch is not None:
            self._check_batch(batch)
        state = self.new_state(batch or self.batch_bounds[0]) if state is None else state
        self._check(state, self._state, "state", batch)
        outs = self._execute(*inputs, *state)
        n = len(self._outputs)
        return [np.asarray(o) for o in outs[:n]], [np.asarray(s) for s in outs[n:]]

    # ----- further entry points (runtimes.decode) ---------------------------------------------------------
    @property
    def methods(self) -> list[str]:
        """The entry points besides the chunk forward that this session's artifact carries."""
        if self.backend.target == EAGER:
            return list(self.manifest.signature.get("methods", {}))
        art = self.manifest.artifacts.get(self.backend.key)
        return list(art.methods) if art is not None else []

    def call_method(self, name: str, *arrays: np.ndarray) -> list[np.ndarray]:
        """Run entry point `name` (its signature in manifest.signature["methods"]) on numpy arrays; loaded
        through this session's backend on first use. Inputs are not checked: for the decode protocol."""
        if name not in self.methods or self._load_method is None:
            raise InputError(f"{self.backend.key} carries no method {name!r}; it has {self.methods or 'none'}")
        with self._lock:
            if name not in self._methods:
                self._methods[name] = self._load_method(name)
            return self._methods[name](*arrays)

    @property
    def decoding(self) -> str:
        """How this session generates: "step" (one token per call through the decode methods) or "recompute"
        (the current partial chunk recomputed for every byte: artifacts without the decode methods)."""
        from runtimes.decode import decoding

        return decoding(self.manifest.signature, self.methods)

    def decoder(self, light: bool = True):
        """A runtimes.decode.Decoder over this session's decode methods (light=False: never the light step)."""
        from runtimes.decode import Decoder

        sig = self.manifest.signature
        n_out = {m: len(s["outputs"]) for m, s in sig.get("methods", {}).items()}
        return Decoder(lambda m, arrays: self.call_method(m, *arrays), sig.get("decode", {}), n_out, light)

    # ----- generation (runtimes.generate) -------------------------------------------------------------
    def stream(self, prompt: bytes, max_new_bytes: int = 200, temperature: float = 0.0, top_k: int = 0,
               seed: int = 0, on_image: Callable[[np.ndarray], None] | None = None,
               decode: str = "auto") -> Iterator[bytes]:
        """Yield generated bytes as they come (see runtimes.generate.stream)."""
        from runtimes.generate import stream

        return stream(self, prompt, max_new_bytes, temperature, top_k, seed, on_image, decode)

    def generate(self, prompt: bytes, max_new_bytes: int = 200, temperature: float = 0.0, top_k: int = 0,
                 seed: int = 0, on_image: Callable[[np.ndarray], None] | None = None, decode: str = "auto") -> bytes:
        return b"".join(self.stream(prompt, max_new_bytes, temperature, top_k, seed, on_image, decode))

    def decode_image(self, codes: list[int]) -> np.ndarray:
        """Image codes -> (H, W) grey image in [0, 1], through the bundle's visual codebook."""
        from runtimes.generate import decode_image

        return decode_image(self.tokens, codes)

    def latencies(self, batch: int = 1, runs: int = 5, warmup: int = 0) -> list[float]:
        """Seconds per chunk call at this batch, after `warmup` untimed calls (random byte tokens)."""
        T = self._inputs[0]["shape"][1]
        tokens = np.random.default_rng(0).integers(0, 256, (batch, T)).astype(np.int32)
        state = self.new_state(batch)
        for _ in range(warmup):
            self.run(tokens, state)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.run(tokens, state)
            times.append(time.perf_counter() - t0)
        return times

    def timed(self, batch: int = 1, runs: int = 5) -> float:
        """Median seconds of one chunk at this batch (for autotuning and quick checks)."""
        return float(np.median(self.latencies(batch, runs)))
