"""Guards every reader applies before touching a file's data: regular files only, the container
recognised from its first bytes, and array sizes checked against a memory limit before allocation.

Environment variables (both read on every call, so a test or a job script can change them):

* ``PTYCHOPINN_MEMORY_LIMIT``: the most bytes one file may make a reader allocate in memory (an integer
  with an optional ``K``/``M``/``G``/``T`` suffix, powers of 1024). Default: 75 % of the machine's
  physical memory. Larger stacks are streamed to disk (see ``PTYCHOPINN_MMAP_THRESHOLD``) or refused.
* ``PTYCHOPINN_MMAP_THRESHOLD``: diffraction stacks larger than this many bytes (same syntax; default
  1 GiB) stay on disk: memory-mapped in place when stored uncompressed, else decoded batch by batch into
  a temporary file in ``$TMPDIR`` that is deleted when the scan is released.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from ptychopinn.errors import ConfigError, DataFormatError

ZIP_MAGIC: tuple[bytes, ...] = (b"PK\x03\x04", b"PK\x05\x06")
"""First bytes of a zip archive (a member first, or an empty archive)."""

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
"""HDF5 superblock signature; found at offset 0 or after a user block of 512, 1024, 2048, ... bytes."""

NPY_MAGIC = b"\x93NUMPY"

MEMORY_LIMIT_ENV = "PTYCHOPINN_MEMORY_LIMIT"
MMAP_THRESHOLD_ENV = "PTYCHOPINN_MMAP_THRESHOLD"
DEFAULT_MMAP_THRESHOLD = 1 << 30
"""Bytes above which a diffraction stack stays on disk (1 GiB)."""

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str, name: str) -> int:
    """``'4096'``, ``'512M'``, ``'8G'``, ``'1.5T'`` (powers of 1024) -> bytes.

    Raises:
        ConfigError: not a positive size.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    value = float(m.group(1)) * _SUFFIX[m.group(2).upper()] if m else math.nan
    if not (math.isfinite(value) and value >= 1):
        raise ConfigError(f"{name} must be a positive number of bytes such as 1073741824, 512M or 8G, got {text!r}; "
                          f"fix or unset the environment variable {name}")
    return int(value)


def _env_bytes(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw is None or raw.strip() == "" else parse_bytes(raw, name)


def physical_memory() -> int:
    """Bytes of physical memory of this machine (8 GiB when the platform does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 8 << 30


def memory_limit() -> int:
    """The most bytes a reader may allocate for one file: ``$PTYCHOPINN_MEMORY_LIMIT`` or 75 % of RAM."""
    return _env_bytes(MEMORY_LIMIT_ENV, int(physical_memory() * 0.75))


def mmap_threshold() -> int:
    """Stack size (bytes) above which diffraction stays on disk: ``$PTYCHOPINN_MMAP_THRESHOLD`` or 1 GiB."""
    return _env_bytes(MMAP_THRESHOLD_ENV, DEFAULT_MMAP_THRESHOLD)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def check_allocation(path: Path | str, what: str, shape: Sequence[int], itemsize: int) -> int:
    """Refuse before allocating when ``shape`` x ``itemsize`` exceeds :func:`memory_limit`.

    Returns:
        The byte count.

    Raises:
        DataFormatError: the declared size is above the limit.
    """
    nbytes = math.prod(int(d) for d in shape) * int(itemsize)
    limit = memory_limit()
    if nbytes > limit:
        raise DataFormatError(
            f"{path}: {what} declares shape {tuple(int(d) for d in shape)} ({_human(nbytes)}), more than the "
            f"memory limit of {_human(limit)}; check the file, or raise {MEMORY_LIMIT_ENV} (bytes, e.g. 64G) "
            "if this machine really has the memory"
        )
    return nbytes


def regular_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` as a Path after checking that it is an existing regular file (never opened for reading).

    Named pipes, devices (``/dev/zero``) and sockets are refused at once: reading them would block or
    never end.

    Raises:
        FileNotFoundError: nothing at ``path``.
        DataFormatError: a directory or a special file.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {p}") from None
    except OSError as exc:
        raise DataFormatError(f"{p}: cannot be read ({exc.strerror or exc}); check the path and permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataFormatError(f"{p} is a directory, expected a {what}; pass the file itself")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a named pipe" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise DataFormatError(f"{p} is {kind}, expected a regular {what}; copy the data to a file first")
    return p


def container(path: Path) -> str:
    """``'zip'``, ``'hdf5'``, ``'npy'`` or ``'unknown'``, from the first bytes of a regular file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head[:4] in ZIP_MAGIC:
                return "zip"
            if head == HDF5_MAGIC:
                return "hdf5"
            if head[:6] == NPY_MAGIC:
                return "npy"
            size = os.fstat(fh.fileno()).st_size
            offset = 512
            while offset + 8 <= size and offset <= 1 << 20:  # HDF5 user blocks are powers of two >= 512
                fh.seek(offset)
                if fh.read(8) == HDF5_MAGIC:
                    return "hdf5"
                offset *= 2
    except OSError:
        return "unknown"
    return "unknown"
