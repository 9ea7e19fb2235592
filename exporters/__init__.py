"""Exporters: one capture of a torch.nn.Module, lowered to every target and verified against the module.

    import exporters
    exporters.export(model, (x,), targets=["onnx", "cpu"], out="bundle")
"""
from exporters.api import ExportFailed, ExportResult, describe, export
from exporters.explain import explain

__all__ = ["ExportFailed", "ExportResult", "describe", "explain", "export"]
