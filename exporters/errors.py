"""Typed errors of the exporters. Every message names the problem and the fix."""


class ExportError(Exception):
    """Base class: the CLI prints these as one paragraph instead of a traceback."""


class CaptureError(ExportError):
    """torch.export could not capture the model."""


class TargetUnavailable(ExportError):
    """A target's library is missing, or this machine cannot build it (say what to install or where to build)."""


class ConversionError(ExportError):
    """A target's converter rejected the captured program."""


class SpecError(ExportError):
    """The module or its example inputs cannot be described for export (say which input or output, and how)."""
