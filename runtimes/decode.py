"""Incremental decoding through a model's decode entry points: a prompt's whole chunks through the chunk
forward (prefill), then one token per call, at the cost of one token instead of one chunk.

A bundle declares the entry points it decodes with in `signature.decode`, role -> method name (the methods'
signatures are in `signature.methods`, and each artifact carries the methods it was built with):

- `enter`: inputs are the chunk forward's state, in its order (no state) -> outputs: the step state;
- `step`: inputs one token (B, 1), state the step state -> outputs: scores (B, 1, V), then the new state;
- optionally `light_step` with `step`'s signature, which gives the same result for less where
  `gate(token, *step_state)` (inputs, no state) -> (B, 1) bool is false for every row (a gate may take only
  some of those, by name: `gate_inputs`, their positions in (token, *step_state));
- optionally `commit`: inputs the step state (no state) -> outputs the chunk forward's state. With it, a
  step state holds one chunk (the chunk forward's token length, `period`) and is full after that many steps:
  the decoder then commits it and enters the next chunk (`enter(commit(state))`) before the next step, so
  `step` itself never handles a chunk end (once per chunk, not masked into every step).

A step state is fixed in size: memory does not grow with the length generated.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from runtimes.errors import InputError

ROLES = ("enter", "step", "light_step", "gate", "commit")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # method names become directory names inside an artifact

Call = Callable[[str, Sequence[np.ndarray]], Sequence[np.ndarray]]  # (method name, arrays) -> outputs


def roles_problem(decode: dict, methods: Sequence[str]) -> str:
    """What is wrong with a `decode` mapping over these method names ('' when nothing)."""
    if not decode:
        return ""
    if not all(isinstance(m, str) for m in decode.values()):
        return "decode roles must each name a method (a string)"
    unknown = sorted(set(decode) - set(ROLES))
    if unknown:
        return f"unknown decode role(s) {unknown}; roles are {', '.join(ROLES)}"
    missing = [r for r in ("enter", "step") if r not in decode]
    if missing:
        return f"decode roles {', '.join(missing)} are missing (enter and step are required)"
    if ("light_step" in decode) != ("gate" in decode):
        return "decode roles light_step and gate go together (gate says where light_step may stand in for step)"
    absent = sorted({m for m in decode.values() if m not in methods})
    if absent:
        return f"decode names method(s) {absent} that are not among the model's methods {sorted(methods)}"
    return ""


def decoding(signature: dict, methods) -> str:
    """How an artifact carrying `methods` generates: "step" (one decode step per token) when it carries every
    method the signature's decode roles name, else "recompute" (the partial chunk recomputed per token)."""
    roles = signature.get("decode", {})
    return "step" if roles and set(roles.values()) <= set(methods) else "recompute"


def gate_inputs(step_names: Sequence[str], gate_names: Sequence[str]) -> list[int] | None:
    """Where the gate's inputs are among the step's (token, *state) by name; None: all of them, in order."""
    if list(gate_names) == list(step_names) or not set(gate_names) <= set(step_names):
        return None
    return [list(step_names).index(n) for n in gate_names]


def name_problem(name: str) -> str:
    return "" if isinstance(name, str) and NAME.fullmatch(name) else (
        f"method name {name!r} is not a plain identifier (letters, digits, _; at most 64)")


class Decoder:
    """The decode protocol over `call(method, arrays)`; `n_outputs[method]` is how many of a method's returned
    arrays are outputs (the rest is its new state); period: the chunk forward's token length (needed with a
    `commit` role). Each call to `step` advances one token. A decoder follows one stream of states (it counts
    the steps since its last `enter`): use one per stream."""

    def __init__(self, call: Call, decode: dict, n_outputs: dict[str, int], light: bool = True,
                 period: int | None = None, gate_inputs: Sequence[int] | None = None,
                 host: Callable[[object], np.ndarray] | None = None):
        if "commit" in decode and not (isinstance(period, int) and period > 0):
            raise InputError("a decode protocol with a commit role needs the chunk length (period=T): the steps "
                             "a step state holds before it is committed")
        self.call, self.roles, self.n_outputs, self.period = call, decode, n_outputs, period
        self.light = light and "light_step" in decode
        self.full_steps = self.light_steps = self.commits = 0
        self.gate_inputs = None if gate_inputs is None else list(gate_inputs)
        self._since = 0  # steps since the last enter
        # host: `call` returns the backend's own arrays (a state stays in them between steps; only scores
        # and gate flags are turned into numpy, by `host`); None: `call` returns numpy arrays
        self.host = host or np.asarray
        self._state = (lambda outs: list(outs)) if host else (lambda outs: [np.asarray(s) for s in outs])

    def enter(self, chunk_state: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The step state right after a prefill of whole chunks (or the initial chunk state)."""
        self._since = 0
        return list(self.call(self.roles["enter"], list(chunk_state)))

    def step(self, token: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """token (B, 1) -> (scores (B, V) for the next token, new step state: numpy arrays, or the backend's
        own with `host`)."""
        if "commit" in self.roles and self._since == self.period:  # a full chunk: commit it, start the next
            state = self.enter(self.call(self.roles["commit"], list(state)))
            self.commits += 1
        self._since += 1
        role = "step"
        args = [token, *state]
        if self.light and not self.host(self.call(self.roles["gate"], args if self.gate_inputs is None else
                                                  [args[i] for i in self.gate_inputs])[0]).any():
            role = "light_step"
        if role == "step":
            self.full_steps += 1
        else:
            self.light_steps += 1
        name = self.roles[role]
        outs = self.call(name, args)
        return self.host(outs[0])[:, -1], self._state(outs[self.n_outputs[name]:])

    def scores(self, tokens: np.ndarray, chunk_state: Sequence[np.ndarray]) -> np.ndarray:
        """tokens (B, N) stepped one at a time from `chunk_state` -> the scores after each, (B, N, V)."""
        state = self.enter(chunk_state)
        out = []
        for i in range(tokens.shape[1]):
            s, state = self.step(np.ascontiguousarray(tokens[:, i:i + 1]), state)
            out.append(s)
        return np.stack(out, axis=1)
