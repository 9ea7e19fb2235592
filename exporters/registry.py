"""The targets, by name. Each module has NAME, PRECISIONS, Settings, is_available() and export()."""
from __future__ import annotations

from types import ModuleType

from exporters import coreml, cpu, cuda, exported, onnx, tensorrt

TARGETS: dict[str, ModuleType] = {m.NAME: m for m in (exported, onnx, tensorrt, coreml, cpu, cuda)}


def available_targets() -> dict[str, tuple[bool, str]]:
    return {name: mod.is_available() for name, mod in TARGETS.items()}
