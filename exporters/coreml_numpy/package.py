"""Reading a saved .mlpackage back into a MIL program (no macOS needed, nothing written into the package),
and `load`: the runner over it, with the same explicit interface as runtimes.backends.coreml's."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from exporters.coreml_numpy.interpreter import Unsupported, evaluate, unsupported_ops
from runtimes.backends.coreml import from_boundary, interface, scalars, to_boundary


def read_spec(path: str):
    """The Model protobuf of a .mlpackage, read without coremltools' ModelPackage (which opens the package
    read-write and rewrites Manifest.json on every load). The root model's path comes from Manifest.json."""
    import coremltools as ct

    with open(os.path.join(path, "Manifest.json")) as f:
        manifest = json.load(f)
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]  # "com.apple.CoreML/model.mlmodel"
    spec = ct.proto.Model_pb2.Model()
    with open(os.path.join(path, "Data", root), "rb") as f:
        spec.ParseFromString(f.read())
    return spec, os.path.join(path, "Data", os.path.dirname(root), "weights")


def load_mlpackage(path: str, spec_and_weights=None):
    """.mlpackage -> pymil Program (weights read from Data/com.apple.CoreML/weights/weight.bin);
    `spec_and_weights`: what read_spec(path) gave, when the caller has it already.

    Equivalent to: spec = ct.utils.load_spec(path) and
    weights_dir = path/Data/com.apple.CoreML/weights, but never writes into the package."""
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    spec, weights_dir = spec_and_weights or read_spec(path)
    # the proto's blobFileValue.fileName is "@model_path/weights/weight.bin"; the loader keeps only the
    # basename and joins it with file_weights_dir
    return milproto_load(spec, spec.specificationVersion, file_weights_dir=weights_dir)


def load(package: str | Path):
    """A runner over the saved package: run(*arrays) -> outputs in the model description's order.

    A stateful package (CoreML state) keeps the same explicit interface: the signature in its metadata
    says where each state goes, the state values are fed into the program's states and read back out.
    int64 and bool tensors cross the boundary as int32, cast as runtimes.backends.coreml's runner casts them."""
    read = read_spec(str(package))
    spec, prog = read[0], load_mlpackage(str(package), read)
    missing = unsupported_ops(prog)
    if missing:
        raise Unsupported(f"the NumPy evaluator cannot compute op(s) {', '.join(sorted(missing))}")
    inputs, outputs, state_names, carried = interface(spec.description)
    scalar = scalars(spec.description)

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        feeds = {n: to_boundary(n, a, carried.get(n)) for n, a in zip(inputs, arrays)}
        states = {n: feeds.pop(n) for n in state_names}
        try:
            result = evaluate(prog, feeds, states=states if state_names else None)
        except RuntimeError as exc:
            raise Unsupported(str(exc)) from exc
        for n in state_names:
            result[f"new_{n}"] = np.asarray(states[n], dtype=np.float32)
        return [from_boundary(result[n], carried.get(n), n in scalar) for n in outputs]

    return run
