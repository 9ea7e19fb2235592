"""Backend `coreml`: an ML program (.mlpackage) run by CoreML's `MLModel.predict` (macOS only).

NOT VERIFIED HERE: this project's development and CI machines run Linux, where CoreML cannot execute a
model; there the saved program is checked by evaluating it in NumPy instead (exporters.coreml_numpy).

The boundary: ML program inputs and outputs hold fp16, fp32 and int32 only, so int64 and bool tensors
travel as int32. The package's metadata (`neat.boundary`) names them with their declared dtype; both
runners (this one and the evaluator's) cast them on the way in and back on the way out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from runtimes.backends.common import availability
from runtimes.errors import InputError

NAME = "coreml"
FILE = "model.mlpackage"
SIGNATURE_KEY = "neat.signature"  # package metadata: full input/state/output order, for stateful packages
BOUNDARY_KEY = "neat.boundary"    # package metadata: {tensor name: declared dtype} of tensors carried as int32
SCALARS_KEY = "neat.scalars"      # package metadata: [names] of 0-d outputs, which CoreML returns as shape (1,)
CARRIED = {"int64": np.int64, "bool": np.bool_}  # declared dtypes that CoreML I/O carries as int32
INT32 = np.iinfo(np.int32)


def problem(requirements: dict, profile) -> str:
    if profile.os != "Darwin":
        return f"CoreML runs only on macOS/iOS (this is {profile.os})"
    return "" if "coremltools" in profile.libraries else 'coremltools is not installed: pip install "neat-deploy[coreml]"'


def is_available() -> tuple[bool, str]:
    return availability(problem, lambda p: f"coremltools {p.libraries['coremltools']} on macOS {p.os_version}")


def boundary(metadata: Mapping[str, str]) -> dict[str, str]:
    """{tensor name: declared dtype} of the tensors a package carries as int32 (empty for older packages)."""
    return json.loads(metadata.get(BOUNDARY_KEY, "{}"))


def to_boundary(name: str, array: np.ndarray, dtype: str | None) -> np.ndarray:
    """An input as CoreML takes it: int64 and bool as int32, a 0-d array as shape (1,) (CoreML has no rank-0
    tensors; the exporter declares such an input so); an int64 value outside int32 is refused."""
    array = np.ascontiguousarray(array).reshape(array.shape or (1,))
    if dtype is None:
        return array
    if dtype == "int64" and array.size and (array.min() < INT32.min or array.max() > INT32.max):
        raise InputError(f"input {name!r}: int64 values {array.min()}..{array.max()} do not fit the int32 that "
                         "CoreML carries them in; keep them within -2**31..2**31-1 or use another backend")
    return array.astype(np.int32)


def scalars(description) -> set[str]:
    """Names of the 0-d outputs of a package (empty for older packages)."""
    return set(json.loads(description.metadata.userDefined.get(SCALARS_KEY, "[]")))


def from_boundary(array, dtype: str | None, scalar: bool = False) -> np.ndarray:
    """An output back in its declared dtype (int32 -> int64 or bool) and, for a 0-d output, its shape ()."""
    array = np.asarray(array).reshape(()) if scalar else np.asarray(array)
    return array if dtype is None else (array != 0 if dtype == "bool" else array.astype(CARRIED[dtype]))


def interface(description) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    """(inputs, outputs, CoreML state names, tensors carried as int32) of a package's model description, in
    the explicit order every runner takes and returns: a stateful package's state is fed in and read back
    where its metadata's signature puts it."""
    inputs = [i.name for i in description.input]
    outputs = [o.name for o in description.output]
    state_names = [s.name for s in description.state]
    metadata = description.metadata.userDefined
    if state_names:
        signature = json.loads(metadata[SIGNATURE_KEY])
        inputs, outputs = signature["inputs"], signature["outputs"]
    return inputs, outputs, state_names, boundary(metadata)


def load(path: Path, requirements: dict, profile, threads: int | None = None):  # CoreML schedules its own
    import coremltools as ct

    units = requirements.get("compute_units", "all")
    model = ct.models.MLModel(str(Path(path) / FILE), compute_units=getattr(ct.ComputeUnit, units.upper()))
    inputs, outputs, state_names, carried = interface(model.get_spec().description)
    scalar = scalars(model.get_spec().description)

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        feeds = {n: to_boundary(n, a, carried.get(n)) for n, a in zip(inputs, arrays)}
        if not state_names:
            result = model.predict(feeds)
        else:
            state = model.make_state()
            for n in state_names:
                state.write_state(n, feeds.pop(n).astype(np.float16))
            result = model.predict(feeds, state=state)
            for n in state_names:
                result[f"new_{n}"] = np.asarray(state.read_state(n), dtype=np.float32)
        return [from_boundary(result[n], carried.get(n), n in scalar) for n in outputs]

    return run
