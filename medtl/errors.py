"""Exceptions that the CLI turns into one clear line and a non-zero exit.

Library code raises a subclass of :class:`MedtlError` for every problem a user can fix
(bad file, bad config, missing weights).  The message must name the file or key at fault.
Anything else is a bug and keeps its traceback.
"""


class MedtlError(Exception):
    """A user-facing error: the message is printed as is, on one line.

    ``fetch``: ``(kind, name)`` when the remedy is to fetch a registered entry (``"weights"`` or
    ``"data"``); the library's message says what is missing in its own terms, and the command
    line adds its command (library text never names CLI flags)."""

    def __init__(self, *args, fetch: tuple[str, str] | None = None):
        super().__init__(*args)
        self.fetch = fetch


class ConfigError(MedtlError):
    """Invalid configuration (unknown key, wrong type, bad value)."""


class DataError(MedtlError):
    """Unreadable, corrupt or inconsistent input data."""


class WeightsError(MedtlError):
    """Missing, mismatched or unsafe pretrained weights."""


class TrainingError(MedtlError):
    """Training diverged (NaN/inf loss) or could not proceed."""
