"""The one Session interface every backend shares (runtimes.pick loads a bundle into one)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from runtimes.bundle import Manifest, read_init_state
from runtimes.errors import InputError, RunFailed, RuntimeLayerError
from runtimes.pick import Choice
from runtimes.select import EAGER

DTYPES = {"int32": np.int32, "int64": np.int64, "bool": np.bool_, "float32": np.float32, "float16": np.float16}


def _batched(info: dict) -> bool:
    return bool(info["shape"]) and info["shape"][0] == "batch"


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
        self.threads = None  # the thread counts it runs with (runtimes.threads.Threads), set by runtimes.load

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

    def call(self, *inputs: np.ndarray, state: list[np.ndarray] | None = None, **named: np.ndarray
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Any model: the inputs in signature order, or by name (`call(x=..., pair_0=...)`, the names of the
        manifest's signature), and the state (default: the initial state at the inputs' batch) -> (outputs,
        new state), each a list in signature order."""
        if named:
            inputs = self._by_name(inputs, named)
        batch = self._check(list(inputs), self._inputs, "input", None)
        if batch is not None:
            self._check_batch(batch)
        state = self.new_state(batch or self.batch_bounds[0]) if state is None else state
        self._check(state, self._state, "state", batch)
        outs = self._execute(*inputs, *state)
        n = len(self._outputs)
        return [np.asarray(o) for o in outs[:n]], [np.asarray(s) for s in outs[n:]]

    def _by_name(self, inputs, named: dict) -> tuple:
        names = [i["name"] for i in self._inputs]
        unknown = [n for n in named if n not in names]
        if inputs or unknown or len(named) != len(names):
            why = (f"no input {unknown[0]!r}" if unknown else "give every input by name, or all in order" if inputs
                   else f"missing {[n for n in names if n not in named]}")
            raise InputError(f"{why}: this bundle's inputs are {', '.join(names)}")
        return tuple(named[n] for n in names)

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
            return self._method(name)(*arrays)

    def _method(self, name: str) -> Callable:
        if name not in self._methods:
            self._methods[name] = self._load_method(name)
        return self._methods[name]

    @property
    def decoding(self) -> str:
        """How this session generates: "step" (one token per call through the decode methods) or "recompute"
        (the current partial chunk recomputed for every byte: artifacts without the decode methods)."""
        from runtimes.decode import decoding

        return decoding(self.manifest.signature, self.methods)

    def decoder(self, light: bool = True, native: bool = False):
        """A runtimes.decode.Decoder over this session's decode methods (light=False: never the light step).
        native=True: where the backend allows it, the step state stays in the backend's own arrays (torch
        tensors) between steps, not converted to numpy and back at every call (generation does this)."""
        from runtimes.decode import Decoder, gate_inputs

        sig, runs = self.manifest.signature, {}
        if self.decoding == "step":  # every decode method loaded now, not mid-stream (a commit once per chunk)
            with self._lock:
                runs = {name: self._method(name) for name in set(sig["decode"].values())}
        n_out = {m: len(s["outputs"]) for m, s in sig.get("methods", {}).items()}
        shape = sig["inputs"][0]["shape"] if sig.get("inputs") else []
        period = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None  # the chunk's tokens
        roles, methods = sig.get("decode", {}), sig.get("methods", {})

        def names(role: str, part: str) -> list[str]:
            return [t["name"] for t in methods.get(roles.get(role), {}).get(part, [])]

        gate = gate_inputs(names("step", "inputs") + names("step", "state"), names("gate", "inputs"))
        if native and runs and all(hasattr(r, "native") for r in runs.values()):
            natives, lock = {m: r.native for m, r in runs.items()}, self._lock

            def call(m, arrays):
                with lock:
                    return natives[m](*arrays)

            return Decoder(call, roles, n_out, light, period, gate, host=next(iter(runs.values())).host)
        return Decoder(lambda m, arrays: self.call_method(m, *arrays), roles, n_out, light, period, gate)

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


def load(*args, **kwargs) -> Session:
    """runtimes.pick.load (kept here for code that imports it from runtimes.session)."""
    from runtimes.pick import load as _load

    return _load(*args, **kwargs)
