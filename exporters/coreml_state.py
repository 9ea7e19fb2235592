"""CoreML state (--coreml-state): the model's float state kept inside the ML program as CoreML states
(iOS 18 / macOS 15+, fp16, fixed batch) instead of explicit inputs and outputs; integer state stays I/O.
The runners (runtimes.backends.coreml, exporters.coreml_numpy) keep the same explicit interface by writing
the state in before a call and reading it back after, in the order the package metadata records."""
from __future__ import annotations

import json

from exporters.capture import Captured, torch_noise_ignored
from exporters.coreml import (Settings, check_names, compute_precision_of, convert_program, deployment_target,
                              io_dtype, mark_boundary)
from runtimes.backends.coreml import SIGNATURE_KEY
from exporters.errors import ConversionError


class _Stateful:
    """Builds a module whose float state lives in buffers that forward() updates in place: coremltools
    turns those into CoreML states. Integer state (CoreML states are fp16 only) stays explicit I/O."""

    @staticmethod
    def wrap(spec, batch: int):
        import torch

        float_names = [t.name for t in spec.state if t.dtype.startswith("float")]
        n_in = len(spec.inputs)

        class Stateful(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = spec.module
                for t, value in zip(spec.state, spec.init_state(batch)):
                    if t.name in float_names:
                        self.register_buffer(t.name, value.clone())

            def forward(self, *args):
                inputs, io_state = list(args[:n_in]), iter(args[n_in:])
                state = [getattr(self, t.name) if t.name in float_names else next(io_state) for t in spec.state]
                outs = self.inner(*inputs, *state)
                n_out = len(spec.outputs)
                io_new = []
                for t, new in zip(spec.state, outs[n_out:]):
                    if t.name in float_names:
                        getattr(self, t.name).copy_(new)
                    else:
                        io_new.append(new)
                return (*outs[:n_out], *io_new)

        return Stateful().eval(), float_names


def _check_stateful(ct, spec, settings: Settings) -> None:
    if settings.precision != "fp16":
        raise ConversionError("CoreML state holds fp16 only: export with --precision fp16 --coreml-state")
    if spec.batch[0] != spec.batch[1]:
        raise ConversionError("CoreML state has a fixed shape: export with a fixed batch, e.g. batch=(1, 1)")
    if deployment_target(ct, settings.coreml_target).value < ct.target.iOS18.value:
        raise ConversionError(f"CoreML state needs iOS 18 / macOS 15 or newer, not {settings.coreml_target}: "
                              "add --coreml-target iOS18")


def convert_stateful(cap: Captured, settings: Settings):
    import coremltools as ct
    import torch

    spec = cap.spec
    _check_stateful(ct, spec, settings)
    batch = spec.batch[0]
    module, float_names = _Stateful.wrap(spec, batch)
    io_infos = [t for t in spec.state if t.name not in float_names]
    example = (*spec.example_chunk(batch), *[s for t, s in zip(spec.state, spec.init_state(batch))
                                              if t.name not in float_names])
    with torch_noise_ignored():
        program = torch.export.export(module, example, strict=True).run_decompositions({})
    infos = (*spec.inputs, *io_infos)
    inputs = [ct.TensorType(name=t.name, shape=t.full_shape(batch), dtype=io_dtype(t.dtype)) for t in infos]
    out_infos = {**{t.name: t for t in spec.outputs}, **{f"new_{t.name}": t for t in io_infos}}
    outputs = [ct.TensorType(name=n, dtype=io_dtype(t.dtype)) for n, t in out_infos.items()]
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=t.full_shape(batch), dtype=io_dtype("float16")),
                           name=t.name) for t in spec.state if t.name in float_names]
    check_names([t.name for t in infos], list(out_infos))
    compute_precision, _ = compute_precision_of(ct, settings.precision, spec.fp32_scopes)
    model = convert_program(ct, program, f"{spec.name} with CoreML state", inputs=inputs, outputs=outputs,
                            states=states, minimum_deployment_target=deployment_target(ct, settings.coreml_target),
                            compute_precision=compute_precision,
                            compute_units=getattr(ct.ComputeUnit, settings.compute_units.upper()))
    ins, outs = spec.names
    model.user_defined_metadata[SIGNATURE_KEY] = json.dumps({"inputs": list(ins), "outputs": list(outs)})
    mark_boundary(model, {**{t.name: t for t in infos}, **out_infos}, out_infos)
    return model
