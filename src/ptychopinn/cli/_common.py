"""Argument types and helpers shared by the command modules (standard library only)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def number(text: str) -> float:
    """argparse type: a finite float (accepts 1e6 notation)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def devices(text: str) -> int | str:
    """argparse type: a positive integer or 'auto'."""
    return "auto" if text == "auto" else positive_int(text)


def set_if(d: dict[str, Any], key: str, value: Any) -> None:
    """Put ``value`` under ``key`` unless it is None (flag not given)."""
    if value is not None:
        d[key] = value


def say(args: argparse.Namespace, text: str) -> None:
    """Print a line to stdout unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def summary(text: str) -> None:
    """The one-line summary at the end of a command (always printed)."""
    print(text, file=sys.stdout, flush=True)
