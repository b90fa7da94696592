"""Errors raised to users: one clear message, raised before any work starts."""


class CondensationError(Exception):
    """Base class for every error this library raises on purpose."""


class ConfigError(CondensationError, ValueError):
    """A config field, name or budget is invalid; the message names the field and the allowed values."""


class BudgetError(ConfigError):
    """A container would store more floats than its budget allows."""


class ArtifactError(CondensationError):
    """An artifact or checkpoint is missing, truncated, tampered with or of the wrong schema."""


class DataError(CondensationError):
    """A dataset root is missing or malformed."""


class NumericalError(CondensationError, FloatingPointError):
    """A run diverged (NaN or infinite loss or values); the message names the iteration and what to change."""


class Interrupted(CondensationError):
    """Ctrl-C or SIGTERM stopped a run at a safe point; the message says how to resume."""


class DistributedError(CondensationError):
    """A rank of a torch.distributed run stopped or lost the others; the message names the step."""
