"""What an exporter needs to know about a model: generic, for any torch.nn.Module with explicit state.

The module's forward is `forward(*inputs, *state) -> (*outputs, *new_state)`; every tensor's dimension 0
is the batch, which may be dynamic between `batch[0]` and `batch[1]`. NEAT supplies its description in
`neat.export_spec`; tests export other modules through the same path.
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


DTYPES = {"int32": torch.int32, "float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str                      # a key of DTYPES
    shape: tuple[int, ...]          # without the batch dimension
    range: tuple[int, int] | None = None  # valid integer values [low, high), for token ids

    def to_dict(self) -> dict:
        d = {"name": self.name, "dtype": self.dtype, "shape": ["batch", *self.shape]}
        if self.range is not None:
            d["range"] = list(self.range)
        return d

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


Chunks = list[tuple[torch.Tensor, ...]]  # a sequence of per-chunk non-state inputs, state carried across


@dataclass
class ExportSpec:
    name: str
    module: torch.nn.Module
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
    long_stream_chunks: int = 0  # > 0: verification also runs one real stream this many chunks long
    info: dict = field(default_factory=dict)               # extra model facts for the manifest (JSON)
    reference_file: Path | None = None  # weights shipped in the bundle so the reference can be rebuilt
    # source fragments (as in torch's stack traces) whose ops stay fp32 in fp16 artifacts: discrete
    # decisions such as a threshold, where fp16 rounding would flip the outcome
    fp32_scopes: tuple[str, ...] = ()

    def random_inputs(self, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
        """Fresh random non-state inputs within each input's valid range."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for t in self.inputs:
            shape = (batch, *t.shape)
            if t.torch_dtype.is_floating_point:
                out.append(torch.randn(shape, generator=g).to(t.torch_dtype))
            else:
                low, high = t.range or (0, 2**15)
                out.append(torch.randint(low, high, shape, generator=g, dtype=t.torch_dtype))
        return tuple(out)

    def example_inputs(self, batch: int) -> tuple[torch.Tensor, ...]:
        return (*self.random_inputs(batch, seed=0), *self.init_state(batch))

    def signature(self) -> dict:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "state": [t.to_dict() for t in self.state],
            "outputs": [t.to_dict() for t in self.outputs],
            "dynamic": {"batch": {"min": self.batch[0], "max": self.batch[1]}},
        }

    @property
    def names(self) -> tuple[Sequence[str], Sequence[str]]:
        """(input names, output names) of the exported graph, state included."""
        ins = [t.name for t in self.inputs] + [t.name for t in self.state]
        outs = [t.name for t in self.outputs] + [f"new_{t.name}" for t in self.state]
        return ins, outs
