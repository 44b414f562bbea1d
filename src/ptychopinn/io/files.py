"""Guards every reader applies before touching a file's data: regular files only, the container
recognised from its first bytes, and array sizes checked against a memory limit before allocation.

Environment variables (both read on every call, so a test or a job script can change them):

* ``PTYCHOPINN_MAX_MEMORY``: the memory policy of :mod:`ptychopinn.limits` (default: half of the
  machine's memory): arrays a file declares larger than that are streamed to disk (see
  ``PTYCHOPINN_MMAP_THRESHOLD``) or refused.
* ``PTYCHOPINN_MMAP_THRESHOLD``: diffraction stacks larger than this many bytes (same syntax; default
  1 GiB) stay on disk: memory-mapped in place when stored uncompressed, else decoded batch by batch into
  a temporary file in ``$TMPDIR`` that is deleted when the scan is released.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from ptychopinn.errors import DataFormatError
from ptychopinn.limits import check_memory, parse_size, require_regular_file

ZIP_MAGIC: tuple[bytes, ...] = (b"PK\x03\x04", b"PK\x05\x06")
"""First bytes of a zip archive (a member first, or an empty archive)."""

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
"""HDF5 superblock signature; found at offset 0 or after a user block of 512, 1024, 2048, ... bytes."""

NPY_MAGIC = b"\x93NUMPY"

BZ2_MAGIC = b"BZh"
"""First bytes of a bzip2 stream, followed by the block size digit 1-9 and a block (or end-of-stream) marker."""
_BZ2_MARKERS = (b"1AY&SY", b"\x17rE8P\x90")

MMAP_THRESHOLD_ENV = "PTYCHOPINN_MMAP_THRESHOLD"
DEFAULT_MMAP_THRESHOLD = 1 << 30
"""Bytes above which a diffraction stack stays on disk (1 GiB)."""


def mmap_threshold() -> int:
    """Stack size (bytes) above which diffraction stays on disk: ``$PTYCHOPINN_MMAP_THRESHOLD`` or 1 GiB."""
    raw = os.environ.get(MMAP_THRESHOLD_ENV)
    return DEFAULT_MMAP_THRESHOLD if raw is None or raw.strip() == "" else parse_size(raw, MMAP_THRESHOLD_ENV)


def check_allocation(path: Path | str, what: str, shape: Sequence[int], itemsize: int) -> int:
    """Refuse before allocating when ``shape`` x ``itemsize`` exceeds :func:`ptychopinn.limits.memory_limit`
    (the one memory policy of the package).

    Returns:
        The byte count.

    Raises:
        DataFormatError: the declared size is above the limit.
    """
    dims = tuple(int(d) for d in shape)
    nbytes = math.prod(dims) * int(itemsize)
    check_memory(nbytes, f"{path}: {what} declares shape {dims}, which",
                 "check the file", error=DataFormatError)
    return nbytes


def regular_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` as a Path after checking that it is an existing regular file (never opened for reading):
    :func:`ptychopinn.limits.require_regular_file` with :class:`DataFormatError`.

    Raises:
        FileNotFoundError: nothing at ``path``.
        DataFormatError: a directory or a special file (a pipe or ``/dev/zero`` would block or never end).
    """
    return require_regular_file(path, what, DataFormatError)


def container(path: Path) -> str:
    """``'zip'``, ``'hdf5'``, ``'npy'``, ``'bz2'`` or ``'unknown'``, from the first bytes of a regular file.

    HDF5 is recognised by its signature at offset 0 or, after a user block, at 512, 1024, 2048, ... (every
    power of two from 512 below the file's size, as the HDF5 format specifies), before the zip magic.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(10)
            size = os.fstat(fh.fileno()).st_size
            offset = 512
            found = head[:8] == HDF5_MAGIC
            while not found and offset + 8 <= size:
                fh.seek(offset)
                found = fh.read(8) == HDF5_MAGIC
                offset *= 2
    except OSError:
        return "unknown"
    if found:
        return "hdf5"
    if head[:4] in ZIP_MAGIC:
        return "zip"
    if head[:6] == NPY_MAGIC:
        return "npy"
    if head[:3] == BZ2_MAGIC and head[3:4] in b"123456789" and head[4:10] in _BZ2_MARKERS:
        return "bz2"
    return "unknown"
