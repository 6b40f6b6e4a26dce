"""User-facing errors.

Every problem a user can fix (a wrong argument, a missing package, bad data) is raised as a
:class:`SubnetError` whose message is one line that names the fix. The CLI prints that line and
exits non-zero; the library lets it propagate so callers can catch it.
"""


class SubnetError(Exception):
    """A problem with the user's input or environment, described in one line."""

    exit_code = 2


class UnsupportedModelError(SubnetError):
    """The model's architecture has no adapter."""


class InvalidSpecError(SubnetError):
    """A subnet spec does not fit the model it is applied to."""


class DataError(SubnetError):
    """Calibration or evaluation data are missing, empty or too short."""


class NonFiniteError(SubnetError):
    """NaN or inf appeared in activations or losses."""


class CheckpointError(SubnetError):
    """A search checkpoint is unreadable or belongs to a run with other inputs."""


class ResourceError(SubnetError):
    """Not enough memory or disk space for the run, detected before the work (or a write) starts."""
