"""Typed errors of the runtime layer. Every message names the problem and the fix."""


class RuntimeLayerError(Exception):
    """Base class: the CLI prints these as one paragraph instead of a traceback."""


class BundleError(RuntimeLayerError):
    """A bundle directory or its manifest is missing, malformed, or from another schema version."""


class IntegrityError(BundleError):
    """A file of a bundle is missing, outside the bundle, or does not match its recorded hash and size."""


class BackendUnavailable(RuntimeLayerError):
    """The library or hardware a backend needs is not here."""


class EvaluationUnsupported(RuntimeLayerError):
    """An off-device evaluator met something it cannot compute: the artifact is "not verified", never passed."""


class RunFailed(RuntimeLayerError):
    """A backend failed on inputs that match the bundle's signature, or returned other outputs than the
    signature lists: the artifact and its manifest disagree."""


class InputError(RuntimeLayerError, ValueError):
    """An input does not match the bundle's signature (dtype, shape, batch bounds, token id range)."""


class SignatureError(BundleError):
    """A bundle cannot be signed or its signature checked: a missing or unreadable key, or no model-signing."""


class UntrustedCode(RuntimeLayerError):
    """A code-bearing artifact was asked for from a bundle not signed by a trusted key, or whose signature
    does not verify (runtimes.trust)."""
