"""Error types for bad input.

Every error a user can cause with a file, an argument or a config value derives from
:class:`PtychoInputError` (a ``ValueError``), carries a one-line message that says what was
expected, what was found and how to fix it, and is turned into exit code 2 by the CLI.
"""

from __future__ import annotations


class PtychoInputError(ValueError):
    """Base class: the user's input (file, array, argument or config) is not acceptable."""


class DataFormatError(PtychoInputError):
    """A scan file or array violates the data contract (keys, shapes, dtypes, values)."""


class ProbeNotFoundError(DataFormatError):
    """A file that could hold a probe has none (readers raise it; ``probe='auto'`` then estimates one)."""


class ConfigError(PtychoInputError):
    """A configuration value is out of range, of the wrong type, or unknown."""


class ArchiveError(PtychoInputError):
    """A model archive is missing, corrupt, unsafe, or of an unsupported format/backend."""


def describe_array(a: object) -> str:
    """Short ``shape=(...) dtype=...`` description of an array-like, for error messages."""
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None:
        return f"type={type(a).__name__}"
    return f"shape={tuple(shape)} dtype={dtype}"
