"""Backend `coreml`: an ML program (.mlpackage) run by CoreML's `MLModel.predict` (macOS only).

NOT VERIFIED HERE: this project's development and CI machines run Linux, where CoreML cannot execute a
model; there the saved program is checked by evaluating it in NumPy instead (runtimes.coreml_eval).
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

NAME = "coreml"
PACKAGE = "model.mlpackage"


def is_available() -> tuple[bool, str]:
    if platform.system() != "Darwin":
        return False, "CoreML runs models only on macOS/iOS (this is " + platform.system() + ")"
    try:
        import coremltools as ct
    except ImportError:
        return False, 'coremltools is not installed: pip install "neat-deploy[coreml]"'
    return True, f"coremltools {ct.__version__} on macOS {platform.mac_ver()[0]}"


def load(artifact_dir: Path, compute_units: str = "all"):
    import coremltools as ct

    model = ct.models.MLModel(str(artifact_dir / PACKAGE),
                              compute_units=getattr(ct.ComputeUnit, compute_units.upper()))
    desc = model.get_spec().description
    inputs = [i.name for i in desc.input]
    outputs = [o.name for o in desc.output]
    state_names = [s.name for s in desc.state]
    if state_names:  # a stateful package: the same explicit interface, state written in and read back
        signature = json.loads(desc.metadata.userDefined["neat.signature"])
        inputs, outputs = signature["inputs"], signature["outputs"]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        feeds = {n: np.ascontiguousarray(a) for n, a in zip(inputs, arrays)}
        if not state_names:
            result = model.predict(feeds)
        else:
            state = model.make_state()
            for n in state_names:
                state.write_state(n, feeds.pop(n).astype(np.float16))
            result = model.predict(feeds, state=state)
            for n in state_names:
                result[f"new_{n}"] = np.asarray(state.read_state(n), dtype=np.float32)
        return [np.asarray(result[n]) for n in outputs]

    return run
