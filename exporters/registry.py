"""The targets, by name. Each module has NAME, PRECISIONS, Settings (a dataclass of its options, the precision
among them: exporters.target.Settings), is_available(), export(cap, out, settings) -> Built, and
runner(artifact_dir, requirements) -> Execution; the artifact runs through the runtime backend of the same
name (runtimes.backends). Adding a target: one module and one entry here."""
from __future__ import annotations

from types import ModuleType

from exporters import coreml, cpu, cuda, exported, mlx, onnx, tensorrt

TARGETS: dict[str, ModuleType] = {m.NAME: m for m in (exported, onnx, tensorrt, coreml, mlx, cpu, cuda)}


def available_targets() -> dict[str, tuple[bool, str]]:
    return {name: mod.is_available() for name, mod in TARGETS.items()}
