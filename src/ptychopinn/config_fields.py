"""How the config dataclasses of :mod:`ptychopinn.config` check their fields, and their shared base class.

Every check raises :class:`ConfigError` naming the field, what was expected and (as a bounded sketch) the
value found. :class:`ConfigBase` gives every config the dict/JSON round trip (unknown keys are an error)
and a ``replace`` that validates again.

Importing this module is cheap (standard library only).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from ptychopinn.errors import ConfigError

__all__ = ["MAX_INT", "ConfigBase", "check_bool", "check_choice", "check_int", "check_num", "is_int", "is_num",
           "require", "sketch"]

T = TypeVar("T", bound="ConfigBase")

MAX_INT = 2**31 - 1
"""Largest integer any config field accepts (larger values overflow torch and numpy index types)."""

# A value from a config file can be huge (a 400-digit number, a list of a million items, a structure whose
# repr grows exponentially through YAML aliases): messages show a bounded sketch of it, never the whole.
_SKETCH = reprlib.Repr()
_SKETCH.maxlevel, _SKETCH.maxlist, _SKETCH.maxtuple, _SKETCH.maxdict = 2, 4, 4, 4
_SKETCH.maxstring, _SKETCH.maxother, _SKETCH.maxlong = 60, 60, 40


def sketch(value: Any) -> str:
    """A repr of ``value`` of at most ~100 characters, however large or deep the value is."""
    try:
        text = _SKETCH.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."


def require(cond: bool, name: str, expected: str, value: Any) -> None:
    """ConfigError naming field ``name``, what was ``expected`` and the ``value`` found, unless ``cond``."""
    if not cond:
        raise ConfigError(f"config field '{name}': expected {expected}, got {sketch(value)}")


def is_int(v: Any) -> TypeGuard[int]:
    """An integer that is not a bool: an int or a numpy integer (a value read from an NPZ or HDF5 file), not
    True/False (int subclasses) nor ``np.bool_`` (not a :class:`numbers.Integral`).

    numpy integers compare, index and convert like int, hence the ``int`` guard; keep one as ``int(v)``
    where it is stored or passed on (JSON and some torch arguments take Python ints only).
    """
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_num(v: Any) -> TypeGuard[float]:
    """A finite number: an integer as in :func:`is_int` or a float (not a bool)."""
    if not (is_int(v) or isinstance(v, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an integer beyond the float range (a 400-digit number)
        return False


def check_int(name: str, v: Any, lo: int | None = None, hi: int | None = None,
              optional: bool = False) -> None:
    """An integer in ``[lo, hi]`` (``hi`` defaults to :data:`MAX_INT`); None too when ``optional``."""
    if optional and v is None:
        return
    rng = ""
    if lo is not None and hi is not None:
        rng = f" in [{lo}, {hi}]"
    elif lo is not None:
        rng = f" >= {lo}"
    if is_int(v) and hi is None and v > MAX_INT:
        rng += f" and at most {MAX_INT}"
    ok = is_int(v) and (lo is None or v >= lo) and v <= (MAX_INT if hi is None else hi)
    require(ok, name, f"an integer{rng}" + (" or null" if optional else ""), v)


def check_num(name: str, v: Any, lo: float | None = None, strict: bool = False,
              optional: bool = False) -> None:
    """A finite number ``>= lo`` (``> lo`` when ``strict``); None too when ``optional``."""
    if optional and v is None:
        return
    ok = is_num(v)
    if ok and lo is not None:
        ok = v > lo if strict else v >= lo
    rel = ">" if strict else ">="
    rng = f" {rel} {lo}" if lo is not None else ""
    require(ok, name, f"a finite number{rng}" + (" or null" if optional else ""), v)


def check_choice(name: str, v: Any, choices: tuple[str, ...]) -> None:
    """One of ``choices``."""
    require(v in choices, name, f"one of {list(choices)}", v)


def check_bool(name: str, v: Any) -> None:
    """True or False (not 0/1 or a string)."""
    require(isinstance(v, bool), name, "true or false", v)


@dataclass(frozen=True)
class ConfigBase:
    """Shared behaviour: dict/JSON round trip and a ``replace`` that re-validates."""

    def __post_init__(self) -> None:
        """Keep integer fields as Python ints (:func:`is_int` accepts numpy integers, but configs are written
        as JSON and passed to torch arguments that take ints only). Subclasses call it before their checks."""
        for f in fields(self):
            v = getattr(self, f.name)
            if is_int(v) and not isinstance(v, int):
                object.__setattr__(self, f.name, int(v))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (paths become strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, Path) else v
        return out

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        """Build from a dict; unknown keys are a :class:`ConfigError` that lists the valid ones."""
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping of field names to values, got "
                              f"{type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted((k for k in d if k not in names), key=str)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {sketch(unknown)}; valid keys are {sorted(names)}")
        return cls(**d)

    def replace(self: T, **changes: Any) -> T:
        """Copy with some fields changed (validated again); unknown names are a ConfigError."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown field(s) {unknown}")
        return dataclasses.replace(self, **changes)
