"""User-facing errors: one line that says what is wrong and what to do.

Raised by methods on bad input; the CLI prints ``error: <message>`` and exits 2,
the UI turns it into ``gr.Error(message)``.
"""


class UserError(ValueError):
    """Bad input or an unavailable resource, described in one line."""


class ModelUnavailable(UserError):
    """A model that cannot be loaded here (not cached, offline, not allow-listed)."""


def check_range(name: str, value, lo, hi) -> None:
    """Raise :class:`UserError` unless ``lo <= value <= hi`` (also rejects NaN and non-numbers)."""
    try:
        ok = lo <= value <= hi
    except TypeError:
        ok = False
    if not ok or value != value:
        raise UserError(f"{name} must be between {lo} and {hi}, got {value!r}")
