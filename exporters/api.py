"""One call from any torch.nn.Module to a verified bundle, in the spirit of torch.export.export:

    import exporters
    result = exporters.export(model, (x,), targets=["onnx", "cpu"], out="bundle", batch=(1, 8))

`describe` works out what the exporters need by running the module once (output names, dtypes, shapes,
which outputs carry the batch); `export` captures, builds every target, verifies each artifact against the
module on every output and every state tensor, and writes the ones that pass into the bundle.

Conventions: `forward(*inputs, *state)` returns a tensor, or a tuple / list / dict (nested is fine) of
tensors; with state, the last len(state) returned tensors are the new state, in the state's order.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from exporters.errors import ExportError, SpecError
from exporters import probe
from exporters.probe import Flat, Lifted
from exporters.inputs import as_args, check_options, flatten
from exporters.spec import DTYPE_NAMES, DTYPES, ExportSpec, TensorInfo, at_batch, weights_sha256

DEFAULT_LONG_STREAM = 64  # chunks of the long-stream case for a module with state
EXPORT_OPTIONS = ("targets", "out", "precision", "options", "check", "step")


@dataclass
class ExportResult:
    bundle: Path
    spec: ExportSpec
    outcomes: list  # exporters.build.Outcome, one per target

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def __str__(self) -> str:
        lines = [f"{self.spec.name} -> {self.bundle}"]
        lines += [f"  {o.key}: {o.verdict}" + (f" ({o.message})" if o.message else "") for o in self.outcomes]
        return "\n".join(lines)


class ExportFailed(ExportError):
    """At least one requested target failed verification or could not be built (the others were written)."""

    def __init__(self, result: ExportResult):
        self.result = result
        bad = [o for o in result.outcomes if not o.ok]
        written = (f"the passing ones are in {result.bundle}" if len(bad) < len(result.outcomes) else
                   f"nothing was written to {result.bundle}")
        super().__init__(f"{len(bad)} of {len(result.outcomes)} target(s) did not pass; {written}:\n"
                         + "\n".join(f"  {o.key}: {o.verdict}: {o.message}" for o in bad))


def export(module: nn.Module, example_inputs=(), targets: Sequence[str] | str = ("all",), out: str | Path = "bundle",
           precision: str = "fp32", options: dict | None = None, check: bool = True, step=None,
           **describe_options) -> ExportResult:
    """Describe `module` (see `describe` for the options), build every target into the bundle at `out`,
    verify each artifact against the module, and write the ones that pass. `targets`: names from
    `exporters.registry.TARGETS` or "all" (everything buildable here). Raises ExportFailed when a target did
    not pass (check=False: return the result instead); a failed artifact is never written."""
    from exporters.build import _quiet, export_bundle

    check_options(describe_options, [*DESCRIBE_OPTIONS, *EXPORT_OPTIONS])
    spec = describe(module, example_inputs, **describe_options)
    targets = [targets] if isinstance(targets, str) else list(targets)
    outcomes = export_bundle(spec, targets, out, precision, options or {}, step or _quiet)
    result = ExportResult(Path(out), spec, outcomes)
    if check and not result.ok:
        raise ExportFailed(result)
    return result


def describe(module: nn.Module, example_inputs=(), *, example_kwargs: Mapping | None = None, name: str | None = None,
             state: Sequence[str] | Mapping[str, torch.Tensor] | None = None,
             init_state: Callable[[int], tuple] | None = None, lift_buffers: bool = False,
             batch: tuple[int, int] | None = None, unbatched: Sequence[str | int] = (),
             input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
             ranges: Mapping[str, tuple[int, int]] | None = None, ignore_below: Mapping[str, float] | None = None,
             argmax: Sequence[str] = (), data: Callable | None = None, score: Callable | None = None,
             long_stream_chunks: int | None = None, **extra) -> ExportSpec:
    """An ExportSpec for `module`, worked out by running it on `example_inputs` (a tensor or a tuple) and
    `example_kwargs` (keyword arguments), as torch.export takes them: tuples, lists and dicts of tensors are
    flattened into named inputs (`pair_0`, `d_key`), str/int/float/bool values are baked in as constants
    (listed in the manifest's model.constant_inputs).

    state: None (no state); names of the last example inputs that are state; or {name: initial value}
      appended after the inputs. The initial state at another batch repeats the given rows, unless
      `init_state(batch) -> tuple` is given.
    lift_buffers: buffers that forward updates in place become explicit state (without it, such a module is
      refused: an artifact cannot hold hidden state).
    batch: (min, max) batch; default: the examples' batch, fixed. unbatched: inputs (names or positions)
      without a batch dimension; 0-d inputs never have one.
    ranges: valid [low, high) of integer inputs (default: the example's own min..max) for random cases, and
      of integer state (checked by the runtime).
    ignore_below: per output, reference values at or below which entries are not compared (a mask).
    argmax: outputs that are scores over their last dim (also checked by argmax agreement).
    data(batch, chunks) -> [inputs per chunk], score(chunks, first outputs) -> float: real held-out data.
    long_stream_chunks: chunks of the long-stream verification case (default 64 with state, 0 without).
    **extra: ExportSpec fields passed through (config, info, reference_file + reference_loader, fp32_scopes).
    """
    check_options(extra, DESCRIBE_OPTIONS)
    if not isinstance(module, nn.Module):
        raise SpecError(f"export takes a torch.nn.Module, got {type(module).__name__}")
    user = copy.deepcopy(module).eval()  # the spec's own copy: later changes to `module` do not leak in
    inner, examples, flat_names, constants = flatten(user, as_args(example_inputs), example_kwargs)
    if not examples:
        raise SpecError(f"no example input is a tensor (constants: {constants}): an exported model takes at "
                        "least one tensor input; pass the data as tensors (torch.tensor(value))")
    prefix = "inner." if inner is not user else ""
    names = list(input_names) if input_names is not None else flat_names
    examples, state_values, state_names = _split_state(examples, names, state)
    names = names[: len(examples)]
    if len(set(names)) != len(names):
        raise SpecError(f"input names {names} repeat: pass input_names= with distinct names")
    flat_in = [*examples, *state_values]
    all_names = [*names, *state_names]
    for n, x in zip(all_names, flat_in):
        if x.dtype not in DTYPE_NAMES:
            raise SpecError(f"input {n!r} has dtype {x.dtype}; supported: {', '.join(DTYPES)}: cast it in the "
                            "module (and pass the example in a supported dtype)")
    lifted = probe.mutated_buffers(inner, flat_in)
    if lifted and not lift_buffers:
        raise SpecError(f"forward updates buffer(s) {', '.join(lifted)} in place: an exported artifact cannot "
                        "hold hidden state. Pass lift_buffers=True to make them explicit state (inputs and "
                        "outputs, initialised from their current values), or pass the state in explicitly")
    if lifted:
        bufs = dict(inner.named_buffers())
        state_values = [*state_values, *(bufs[n].detach().clone() for n in lifted)]
        state_names = [*state_names, *(n.removeprefix(prefix).replace(".", "_") for n in lifted)]
        flat_in, all_names = [*examples, *state_values], [*names, *state_names]
    core = Lifted(inner, lifted) if lifted else inner
    wrapped = Flat(core, probe.mutated_inputs(core, flat_in))
    _check_unbatched(unbatched, all_names)
    skip = set(unbatched) | {n.removeprefix(prefix).replace(".", "_") for n in lifted}
    batched = [x.dim() > 0 and i not in skip and n not in skip for i, (n, x) in enumerate(zip(all_names, flat_in))]
    B = _example_batch(all_names, flat_in, batched)
    lo, hi = batch if batch is not None else (B, B)
    if not 1 <= lo <= hi:
        raise SpecError(f"batch=({lo}, {hi}): the batch bounds must be 1 <= min <= max, e.g. batch=({max(1, min(lo, hi))}, {max(1, lo, hi)})")
    outs = probe.run(wrapped, flat_in)
    if len(outs) < len(state_values):
        raise SpecError(f"forward returned {len(outs)} tensor(s); with {len(state_values)} state tensor(s) it must "
                        "return its outputs, then the new value of each state tensor, in the state's order")
    out_names = probe.output_names(inner, flat_in, len(outs) - len(state_values), output_names, lifted)
    _check_new_state(outs[len(out_names):], state_values, state_names)
    out_batched = probe.batched_outputs(wrapped, flat_in, batched, outs[: len(out_names)], B, (lo, hi))
    ranges, ignore_below = dict(ranges or {}), dict(ignore_below or {})
    unknown = (set(ranges) - set(all_names)) | (set(ignore_below) - set(out_names)) | (set(argmax) - set(out_names))
    if unknown:
        raise SpecError(f"unknown input/output name(s) {sorted(unknown)}; inputs: {names}, outputs: {out_names}")
    _check_output_names(all_names, out_names, state_names)
    n_in = len(examples)
    inputs = tuple(_info(n, x, b, ranges.get(n)) for n, x, b in zip(names, examples, batched))
    states = tuple(_info(n, x, b, ranges.get(n)) for n, x, b in zip(state_names, state_values, batched[n_in:]))
    outputs = tuple(_info(n, y, b, ignore_below=ignore_below.get(n)) for n, y, b in zip(out_names, outs, out_batched))
    if init_state is None:
        rows = [x.detach().clone() for x in state_values]
        init_state = _repeat_rows(rows, batched[n_in:])
    if long_stream_chunks is None:
        long_stream_chunks = DEFAULT_LONG_STREAM if states else 0
    return ExportSpec(
        name=name or type(module).__name__.lower(), module=wrapped, inputs=inputs, state=states, outputs=outputs,
        init_state=init_state, batch=(lo, hi), weights_sha256=weights_sha256(user), real_data=data, score=score,
        long_stream_chunks=long_stream_chunks, examples=tuple(x.detach().clone() for x in examples),
        argmax=tuple(argmax), **_noted(extra, constants))


DESCRIBE_OPTIONS = tuple(inspect.signature(describe).parameters)[2:-1]  # its keywords, without **extra


# ----- helpers --------------------------------------------------------------------------------------
def _as_tuple(x, what: str) -> tuple[torch.Tensor, ...]:
    items = (x,) if isinstance(x, torch.Tensor) else tuple(x)
    for i, t in enumerate(items):
        if not isinstance(t, torch.Tensor):
            raise SpecError(f"{what}[{i}] is a {type(t).__name__}, not a tensor: every input of an exported model "
                            "is a tensor; keep constants as module attributes or pass torch.tensor(value)")
    return items


def _check_unbatched(unbatched, names) -> None:
    bad = [u for u in unbatched if (u not in names if isinstance(u, str) else not 0 <= u < len(names))]
    if bad:
        raise SpecError(f"unbatched={list(unbatched)}: {bad} name no input; the inputs are {names} "
                        "(give names, or positions from 0)")


def _check_output_names(ins, outs, state_names) -> None:
    """Every target and the runtimes go by name: an output (or a new state, new_<state>) named like an input
    is refused for all of them, here, rather than by the first converter that cannot hold both."""
    both = sorted(set(ins) & {*outs, *(f"new_{n}" for n in state_names)})
    if both:
        raise SpecError(f"{both} name both an input and an output: pass output_names=[...] with "
                        f"{len(outs)} other name(s) (or input_names=)")


def _noted(extra: dict, constants: dict) -> dict:
    """The constants baked in, noted in the manifest's model facts (info), JSON values as given."""
    if constants:
        extra = {**extra, "info": {**extra.get("info", {}), "constant_inputs": constants}}
    return extra


def _split_state(examples, names, state):
    if state is None:
        return list(examples), [], []
    if isinstance(state, Mapping):
        values = list(_as_tuple(tuple(state.values()), "state"))
        return list(examples), values, list(state)
    state = list(state)
    if len(state) > len(examples):
        raise SpecError(f"state names {state} are more than the {len(examples)} example inputs; with names, the "
                        "last example inputs are the initial state")
    k = len(examples) - len(state)
    return list(examples[:k]), list(examples[k:]), state


def _check_new_state(new, old, names) -> None:
    for n, a, b in zip(names, new, old):
        if a.dtype != b.dtype or a.shape != b.shape:
            raise SpecError(f"state {n!r}: forward returned {a.dtype} {tuple(a.shape)} as its new value, the "
                            f"state is {b.dtype} {tuple(b.shape)}: the last {len(names)} returned tensors must be "
                            "the new state, in the state's order, with its dtype and shape")


def _example_batch(names, inputs, batched) -> int:
    sizes = {n: x.shape[0] for n, x, b in zip(names, inputs, batched) if b}
    if not sizes:
        return 1
    first = next(iter(sizes.values()))
    odd = [n for n, s in sizes.items() if s != first]
    if odd:
        raise SpecError(f"input(s) {odd} have a dimension 0 other than the batch {first} of "
                        f"{next(iter(sizes))!r}: declare inputs without a batch dimension with unbatched=[...]")
    return first


def _info(name: str, x: torch.Tensor, batched: bool, range_=None, ignore_below=None) -> TensorInfo:
    shape = tuple(x.shape[1:]) if batched else tuple(x.shape)
    return TensorInfo(name, DTYPE_NAMES[x.dtype], shape, tuple(range_) if range_ else None, batched, ignore_below)


def _repeat_rows(rows: list[torch.Tensor], batched: list[bool]):
    def init_state(batch: int) -> tuple[torch.Tensor, ...]:
        return tuple(at_batch(r, batch) if b else r.clone() for r, b in zip(rows, batched))

    return init_state
