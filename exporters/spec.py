"""What an exporter needs to know about a model: generic, for any torch.nn.Module with explicit state.

The module's forward is `forward(*inputs, *state) -> (*outputs, *new_state)`, a flat tuple; dimension 0 of
every batched tensor is the batch, which may be dynamic between `batch[0]` and `batch[1]`; unbatched
tensors have a fixed shape. `exporters.describe` builds a spec from any module and example inputs (NEAT's
own description, `neat.export_spec`, is one use of it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in name order)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


DTYPES = {"int32": torch.int32, "int64": torch.int64, "bool": torch.bool, "float16": torch.float16,
          "float32": torch.float32}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str                      # a key of DTYPES
    shape: tuple[int, ...]          # without the batch dimension when batched
    range: tuple[int, int] | None = None  # valid integer values [low, high), for token ids
    batched: bool = True            # dimension 0 (not in `shape`) is the batch; False: `shape` is all of it
    ignore_below: float | None = None  # outputs: reference entries at or below this are not compared (a mask)

    def to_dict(self) -> dict:
        d = {"name": self.name, "dtype": self.dtype, "shape": ["batch", *self.shape] if self.batched else list(self.shape)}
        if self.range is not None:
            d["range"] = list(self.range)
        if self.ignore_below is not None:
            d["ignore_below"] = self.ignore_below
        return d

    def full_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape) if self.batched else tuple(self.shape)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


Chunks = list[tuple[torch.Tensor, ...]]  # a sequence of per-chunk non-state inputs, state carried across


def at_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """A batched example tensor cycled or cut to `batch` rows (a fresh copy)."""
    return t[torch.arange(batch) % t.shape[0]].clone()


@dataclass
class ExportSpec:
    """Everything the exporters and the verifier need to know about one module. Build it with
    `exporters.describe(module, example_inputs, ...)`, which works the outputs out by running the module."""

    name: str
    module: torch.nn.Module          # forward(*inputs, *state) -> flat tuple (*outputs, *new_state)
    inputs: tuple[TensorInfo, ...]
    state: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    init_state: Callable[[int], tuple[torch.Tensor, ...]]
    batch: tuple[int, int] = (1, 1)
    config: dict = field(default_factory=dict)
    weights_sha256: str = ""
    real_data: Callable[[int, int], Chunks] | None = None  # (batch, chunks) -> held-out real inputs
    # score(real chunks, first output per chunk) -> a quality figure, lower is better (bits per byte)
    score: Callable[[Chunks, list], float] | None = None
    long_stream_chunks: int = 0  # > 0: verification also runs one stream this many chunks long
    info: dict = field(default_factory=dict)               # extra model facts for the manifest (JSON)
    reference_file: Path | None = None  # weights shipped in the bundle so the reference can be rebuilt
    reference_loader: str = ""  # entry point (group neat_deploy.reference_loaders) rebuilding it from them
    # source fragments (as in torch's stack traces) whose ops stay fp32 in fp16 artifacts: discrete
    # decisions such as a threshold, where fp16 rounding would flip the outcome
    fp32_scopes: tuple[str, ...] = ()
    examples: tuple[torch.Tensor, ...] | None = None  # the user's example inputs (not state), any batch
    argmax: tuple[str, ...] = ()  # outputs that are scores over their last dim: argmax agreement is checked
    # further entry points of the same model, each described like this one (its module's forward is the
    # method); every target builds each of them, and the manifest records their signatures
    methods: dict[str, "ExportSpec"] = field(default_factory=dict)
    # roles of the methods in incremental decoding (runtimes.generate.DECODE_ROLES): role -> method name
    decode: dict[str, str] = field(default_factory=dict)
    # the reference's results per verification case, computed once per export and shared by every artifact
    reference_runs: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        from exporters.errors import SpecError
        from runtimes.decode import name_problem, roles_problem

        why = [name_problem(n) for n in self.methods if name_problem(n)] + [roles_problem(self.decode, list(self.methods))]
        bad = [m for m in self.methods.values() if m.methods]
        if bad:
            why.append("a method cannot have methods of its own")
        why = [w for w in why if w]
        if why:
            raise SpecError(f"{self.name}: " + "; ".join(why) + ": fix the methods= / decode= given to describe")

    def random_inputs(self, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
        """Fresh random non-state inputs like the examples: floats with the example's mean and spread,
        integers within the input's range (default: the example's own [min, max]). Unbatched inputs, bool
        inputs and float inputs holding inf/NaN (masks) are structure, not data: the example's values."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for i, t in enumerate(self.inputs):
            ex = self.examples[i] if self.examples is not None else None
            shape = t.full_shape(batch)
            if ex is not None and (not t.batched or t.dtype == "bool" or (
                    t.torch_dtype.is_floating_point and not torch.isfinite(ex).all())):
                out.append(at_batch(ex, batch) if t.batched else ex.clone())
            elif t.torch_dtype.is_floating_point:
                mean, std = (0.0, 1.0) if ex is None or ex.numel() < 2 else (float(ex.float().mean()), float(ex.float().std()))
                out.append((torch.randn(shape, generator=g) * (std or 1.0) + mean).to(t.torch_dtype))
            elif t.dtype == "bool":
                out.append(torch.rand(shape, generator=g) < 0.5)
            else:
                low, high = t.range or ((int(ex.min()), int(ex.max()) + 1) if ex is not None and ex.numel() else (0, 2**15))
                out.append(torch.randint(low, high, shape, generator=g, dtype=t.torch_dtype))
        return tuple(out)

    def example_chunk(self, batch: int) -> tuple[torch.Tensor, ...]:
        """The user's example inputs at this batch (cycled), or random ones when there are none."""
        if self.examples is None:
            return self.random_inputs(batch, seed=0)
        return tuple(at_batch(x, batch) if t.batched else x.clone() for t, x in zip(self.inputs, self.examples))

    def example_inputs(self, batch: int) -> tuple[torch.Tensor, ...]:
        return (*self.example_chunk(batch), *self.init_state(batch))

    def signature(self) -> dict:
        sig = {
            "inputs": [t.to_dict() for t in self.inputs],
            "state": [t.to_dict() for t in self.state],
            "outputs": [t.to_dict() for t in self.outputs],
            "dynamic": {"batch": {"min": self.batch[0], "max": self.batch[1]}},
        }
        if self.methods:
            sig["methods"] = {name: m.signature() for name, m in self.methods.items()}
        if self.decode:
            sig["decode"] = dict(self.decode)
        return sig

    @property
    def names(self) -> tuple[Sequence[str], Sequence[str]]:
        """(input names, output names) of the exported graph, state included."""
        ins = [t.name for t in self.inputs] + [t.name for t in self.state]
        outs = [t.name for t in self.outputs] + [f"new_{t.name}" for t in self.state]
        return ins, outs
