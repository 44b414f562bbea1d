"""Resource limits for untrusted input: memory demanded by declared sizes, and regular files only.

A small file can declare a huge array (an NPZ header, an HDF5 dataset, a canvas spanned by two far-apart scan
positions, ``simulate --object-size``). Every place that allocates from a declared size first estimates the
bytes and calls :func:`check_memory`, which refuses anything above :func:`memory_limit` with a
:class:`MemoryLimitError` before a single byte is allocated.

The limit follows the machine: half of the smallest of the physical memory, the cgroup limit
(``memory.max``, containers and batch jobs) and the address-space rlimit of this process (``ulimit -v``).
``PTYCHOPINN_MAX_MEMORY`` overrides it: a number of bytes, optionally with a suffix ``K``/``M``/``G``/``T``
(powers of 1024), e.g. ``PTYCHOPINN_MAX_MEMORY=64G``.

:func:`open_regular` opens a file for reading only if it is a regular file: a named pipe, a device
(``/dev/zero``) or a socket given as an input would block or never end.

Standard library only; cheap to import.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import stat
from pathlib import Path
from typing import Any, BinaryIO

from ptychopinn.errors import ConfigError, PtychoInputError

__all__ = ["MEMORY_ENV", "MemoryLimitError", "check_memory", "file_kind", "format_bytes", "memory_limit",
           "nesting_depth", "open_regular", "parse_size", "require_regular_file"]

MEMORY_ENV = "PTYCHOPINN_MAX_MEMORY"
"""Environment variable that overrides :func:`memory_limit` (bytes, or a number with K/M/G/T)."""

_FRACTION = 0.5  # leave the other half for the model, the batch buffers and the rest of the process
_SUFFIX = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


class MemoryLimitError(PtychoInputError):
    """An input declares a size whose allocation would exceed :func:`memory_limit`."""


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human-readable string (``'12.0 GiB'``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def parse_size(text: str, name: str = MEMORY_ENV) -> int:
    """``'4096'``, ``'512M'``, ``'8G'``, ``'1.5T'`` (powers of 1024) -> bytes; ``name`` is the environment
    variable or setting the text came from (named in the error).

    Raises:
        ConfigError: not a positive size.
    """
    m = _SIZE.match(text)
    if m is None or len(text) > 40:
        raise ConfigError(f"{name}: expected a number of bytes such as 8000000000 or 8G, found "
                          f"{text[:40]!r}; fix or unset the environment variable")
    value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if value < 1:
        raise ConfigError(f"{name}: expected a positive size, found {text!r}; fix or unset the "
                          "environment variable")
    return int(value)


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(path).read_text().strip()
            if text.isdigit() and int(text) < 1 << 60:  # cgroup v1 writes a huge number for "no limit"
                return int(text)
    return None


def _machine_memory() -> int:
    """The smallest of physical memory, the cgroup limit and RLIMIT_AS, in bytes."""
    candidates = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        candidates.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    cgroup = _cgroup_limit()
    if cgroup is not None:
        candidates.append(cgroup)
    with contextlib.suppress(ValueError, OSError):
        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and soft > 0:
            candidates.append(soft)
    return min(candidates) if candidates else 8 * 1024**3


def memory_limit() -> int:
    """Bytes one allocation driven by an input's declared size may take.

    ``$PTYCHOPINN_MAX_MEMORY`` when set (a bad value is a :class:`ConfigError`), else half of the machine's
    memory as seen by this process (physical memory, cgroup limit, ``ulimit -v``, whichever is smallest).
    """
    text = os.environ.get(MEMORY_ENV)
    if text is not None and text.strip():
        return parse_size(text)
    return int(_machine_memory() * _FRACTION)


def check_memory(nbytes: float, what: str, fix: str, error: type[PtychoInputError] = MemoryLimitError) -> None:
    """Refuse an allocation of ``nbytes`` above :func:`memory_limit` before it happens.

    Args:
        nbytes: estimated bytes (may be a float: products of declared sizes can exceed int64).
        what: what would be allocated, e.g. ``'the stitching canvas of 60000 x 60000 pixels'``.
        fix: how the user fixes it (the override variable is named by this function).
        error: the :class:`PtychoInputError` subclass raised (the caller's usual one, e.g. ``ArchiveError``).

    Raises:
        ``error`` (default :class:`MemoryLimitError`): ``nbytes`` is above the limit.
    """
    limit = memory_limit()
    if nbytes > limit:
        raise error(f"{what} needs about {format_bytes(nbytes)} of memory, more than the limit of "
                               f"{format_bytes(limit)}; {fix} (or raise the limit with {MEMORY_ENV}=SIZE, "
                               "e.g. 64G, if the machine really has the memory)")


def file_kind(mode: int) -> str:
    """A word for the kind of file ``mode`` (from ``os.stat``) describes."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _not_regular(path: Path, what: str, mode: int, error: type[PtychoInputError]) -> PtychoInputError:
    return error(f"{what} {path} is {file_kind(mode)}; expected a regular file (pipes and devices "
                            "never end or block); pass the file itself")


def require_regular_file(path: str | os.PathLike[str], what: str,
                         error: type[PtychoInputError] = PtychoInputError) -> Path:
    """``path`` as a Path if it names a regular file (links followed); FileNotFoundError if nothing is there,
    ``error`` (a :class:`PtychoInputError` subclass) for a directory, pipe, device or socket. Never opens
    the file."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {p}") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(p, what, mode, error)
    return p


def open_regular(path: str | os.PathLike[str], what: str,
                 error: type[PtychoInputError] = PtychoInputError) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file, without ever blocking.

    The file is opened non-blocking (opening a named pipe with no writer would wait forever), checked with
    ``fstat`` on the open descriptor (no race with a swapped path), then switched back to blocking reads.
    Raises FileNotFoundError or :class:`PtychoInputError` as :func:`require_regular_file`.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise error(f"{what} {p} is a directory; expected a regular file; pass the file itself") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(p, what, mode, error)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def nesting_depth(obj: Any, limit: int) -> int:
    """Depth of nested dicts/lists in ``obj`` (a scalar is 0), counted without recursion; stops counting
    once ``limit`` is exceeded (returns ``limit + 1``), so a pathological value costs little."""
    stack = [(obj, 0)]
    deepest = 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, (list, tuple)):
            children = list(value)
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > limit:
            return limit + 1
        stack.extend((c, depth + 1) for c in children)
    return deepest
