"""Off-device check of a CoreML artifact, used by the `coreml` target's verification where CoreML cannot run
(exporters.coreml `runner()`): load the *saved* .mlpackage back into a MIL program (no macOS needed) and
evaluate it op by op in NumPy: with the NumPy versions in exporters.coreml_numpy.ops (conv, pooling,
norms, resizing...) where there is one, else through the op's own `value_inference()`.

    run = load("model.mlpackage")            # like every backend: run(*inputs) -> outputs, in spec order
    prog = load_mlpackage("model.mlpackage") # or by name:
    outs = evaluate(prog, {"tokens": np_int32, ...})   # dict output name -> np.ndarray

This is a verification tool, not a runtime for speed (an app embeds runtimes/, never this): an op it cannot
compute raises `Unsupported`, which makes the verdict "not verified", never "passed".

fp16 tensors are computed in fp32 and rounded to fp16 after every op, as CoreML computes them (see
interpreter.py); results come back in the declared output dtypes.

    package.py      reading the .mlpackage (read_spec, load_mlpackage) and the runner `load`
    interpreter.py  binding values, running blocks and control flow: evaluate, unsupported_ops
    ops.py          the NumPy op implementations and their table, CUSTOM (conv.py: convolution, pooling)
"""
from exporters.coreml_numpy.interpreter import Unsupported, evaluate, unsupported_ops
from exporters.coreml_numpy.package import load, load_mlpackage, read_spec

__all__ = ["Unsupported", "evaluate", "load", "load_mlpackage", "read_spec", "unsupported_ops"]
