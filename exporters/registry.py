"""The targets, by name. Each module has NAME, PRECISIONS, Settings (a dataclass of its options, the precision
among them: exporters.target.Settings), is_available(), export(cap, out, settings) -> Built, and
runner(artifact_dir, requirements) -> Execution (and NOT_IN_ALL, why, where `all` leaves it out: built when
named); the artifact runs through the runtime backend of the same name (runtimes.backends). Adding a target:
one module and one entry here."""
from __future__ import annotations

from types import ModuleType

from exporters import coreml, cpu, cuda, executorch, exported, mlx, onnx, openvino, tensorrt

TARGETS: dict[str, ModuleType] = {m.NAME: m for m in (exported, onnx, tensorrt, coreml, mlx, cpu, cuda, openvino,
                                                              executorch)}


def available_targets() -> dict[str, tuple[bool, str]]:
    return {name: mod.is_available() for name, mod in TARGETS.items()}
