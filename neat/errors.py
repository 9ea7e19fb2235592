"""Typed errors of the `neat` package. Every message says what went wrong and what to do about it."""


class NeatError(Exception):
    """Base class: the CLI prints these as one paragraph instead of a traceback."""


class CheckpointError(NeatError):
    """A checkpoint is missing, unreadable, or does not match the model it claims to be."""


class DataError(NeatError):
    """Training or evaluation data could not be built on this machine."""


class BadHeartbeat(NeatError):
    """NEAT_HEARTBEAT_S (the progress heartbeat's period) is not a positive number of seconds."""
