"""The ``_metadata`` JSON of scan, reconstruction and product files: parsed within limits every reader relies on.

The metadata is optional provenance: text that is not a JSON object is skipped with a warning. JSON that could
exhaust the parser or carry values the writers cannot round-trip is refused with one line.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ptychopinn.errors import DataFormatError

__all__ = ["MAX_METADATA_DEPTH", "MAX_METADATA_DIGITS", "parse_metadata"]

MAX_METADATA_DEPTH = 32
"""Nesting depth of ``_metadata`` JSON accepted (ptychopinn writes flat objects)."""
MAX_METADATA_DIGITS = 20
"""Digits of a ``_metadata`` JSON integer accepted (int64 has 19)."""


def _metadata_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_METADATA_DIGITS:
        raise ValueError(f"an integer of {len(digits.lstrip('-'))} digits")
    return int(digits)


def _check_json_values(value: Any) -> str | None:
    """What is wrong with parsed JSON ``value`` (too deep, text that is not UTF-8), or None; no recursion."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "text that is not UTF-8 (an escaped lone surrogate)"
        elif isinstance(item, (dict, list)):
            if depth >= MAX_METADATA_DEPTH:
                return f"values nested more than {MAX_METADATA_DEPTH} levels deep"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    return None


def parse_metadata(text: Any, path: Path, key: str = "_metadata") -> dict[str, Any]:
    """JSON object from the ``_metadata`` text (or another metadata entry ``key``) of the file ``path``.

    Text that is not JSON, or JSON that is not an object, is skipped with a warning (the metadata is optional
    provenance). JSON that breaks the limits every reader relies on is refused: nesting deeper than
    :data:`MAX_METADATA_DEPTH`, integers longer than :data:`MAX_METADATA_DIGITS` digits, text that is not UTF-8.

    Raises:
        DataFormatError: one of those limits is broken.
    """
    if text is None:
        return {}
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    fix = f"rewrite '{key}' as a flat JSON object of plain values"
    try:
        meta = json.loads(str(text), parse_int=_metadata_int)
    except json.JSONDecodeError as exc:
        warnings.warn(f"{path}: '{key}' is not valid JSON ({exc}); skipped", UserWarning, stacklevel=4)
        return {}
    except RecursionError:
        raise DataFormatError(f"{path}: '{key}' JSON nests values too deeply to parse; {fix}") from None
    except ValueError as exc:  # an oversized integer (parse_int), or one beyond Python's own digit limit
        raise DataFormatError(f"{path}: '{key}' JSON holds {exc}; expected numbers of at most "
                              f"{MAX_METADATA_DIGITS} digits; {fix}") from None
    problem = _check_json_values(meta)
    if problem is not None:
        raise DataFormatError(f"{path}: '{key}' JSON holds {problem}; {fix}")
    if not isinstance(meta, dict):
        warnings.warn(f"{path}: '{key}' JSON is a {type(meta).__name__}, not an object; skipped",
                      UserWarning, stacklevel=4)
        return {}
    return meta
