"""Larger-than-memory scans: diffraction stacks memory-mapped from disk instead of loaded.

* :func:`open_npz_mmap` maps the diffraction member of an **uncompressed** NPZ (written by
  :func:`numpy.savez` or :func:`ptychopinn.io.npz.save_npz`) in place; :func:`open_h5_scan` does the
  same for a contiguous, unfiltered HDF5 dataset. Both refuse, with the reason and a recipe, anything
  that would need a full-size conversion (counts -> amplitude, float64, legacy ``[N, N, M]`` layout,
  compressed or chunked storage).
* :func:`load_scan_auto` is :func:`ptychopinn.io.registry.load_scan`, which keeps every stack larger
  than ``PTYCHOPINN_MMAP_THRESHOLD`` bytes (default 1 GiB) on disk: mapped in place when possible,
  otherwise decoded batch by batch into a temporary file.

The returned :class:`~ptychopinn.data.ScanData` is used like any other: training gathers one batch at a
time from the map (``GroupedDataset.__getitems__``), inference streams batches (``reconstruct``), and
validation checks the patterns in chunks of 256, releasing each chunk's pages afterwards.

Memory note: pages of a memory-mapped file that were read count as *file-backed* resident memory
(``RssFile``) until the kernel reclaims them; they are clean page cache and are dropped under memory
pressure, so a file larger than RAM can be processed. Anonymous memory (``RssAnon``) stays bounded by the
model, one batch and the canvas.
"""

from __future__ import annotations

import os

from ptychopinn.data.scan import ScanData
from ptychopinn.io.files import DEFAULT_MMAP_THRESHOLD

__all__ = ["DEFAULT_MMAP_THRESHOLD", "MMAP_UNITS", "load_scan_auto", "npz_is_mappable", "open_h5_scan",
           "open_npz_mmap", "should_mmap"]

MMAP_UNITS = ("amplitude", "auto")
"""``units`` accepted by the mapping readers (a counts -> amplitude conversion would copy the stack)."""


def npz_is_mappable(path: str | os.PathLike[str]) -> bool:
    """True when the NPZ's diffraction member is stored uncompressed (so it can be memory-mapped)."""
    from ptychopinn.errors import PtychoInputError
    from ptychopinn.io.npz import NpzSource

    try:
        with NpzSource(path) as src:
            return any(src.is_mappable(k) for k in ("diffraction", "diff3d") if k in src.members)
    except (PtychoInputError, OSError):
        return False


def should_mmap(path: str | os.PathLike[str], threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """True for an uncompressed NPZ larger than ``threshold`` bytes (default 1 GiB)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    return size > threshold and npz_is_mappable(path)


def open_npz_mmap(path: str | os.PathLike[str], units: str = "amplitude") -> ScanData:
    """Open a scan NPZ with its diffraction stack memory-mapped (read-only) instead of loaded.

    Args:
        path: an uncompressed ``.npz`` following the contract of :mod:`ptychopinn.io.schema`.
        units: ``'amplitude'`` or ``'auto'`` (accepted when the stack is float32 and ``_metadata`` does not
            say intensity). Counts cannot be mapped (the square root would copy the stack).

    Returns:
        A validated :class:`ScanData` whose ``diffraction`` is a read-only ``np.memmap`` ``[M, N, N]``
        float32 (``Y``, if stored uncompressed as complex64, is mapped too).

    Raises:
        FileNotFoundError: no such file. ConfigError: unsupported ``units``.
        DataFormatError: compressed member (re-save with ``np.savez``), not float32 amplitude, bad layout,
            missing keys, or any ScanData validation failure.
    """
    from ptychopinn.io.npz import load_npz
    from ptychopinn.io.schema import check_units

    check_units(units)
    return load_npz(path, units=units, mapping="require")


def open_h5_scan(path: str | os.PathLike[str], units: str = "amplitude") -> ScanData:
    """Open an HDF5 scan (:mod:`ptychopinn.io.hdf5` layout) with the diffraction stack memory-mapped.

    Raises:
        DataFormatError: chunked/compressed diffraction (read those with ``load_scan``), not float32
            amplitude, or any ScanData validation failure.
    """
    from ptychopinn.io.hdf5 import load_h5_scan
    from ptychopinn.io.schema import check_units

    check_units(units)
    return load_h5_scan(path, units=units, mapping="require")


def load_scan_auto(path: str | os.PathLike[str], units: str = "auto", threshold: int | None = None) -> ScanData:
    """Any registered scan format through :func:`ptychopinn.io.registry.load_scan`.

    ``threshold`` (bytes) overrides ``PTYCHOPINN_MMAP_THRESHOLD`` for this call: larger stacks stay on disk.
    """
    from ptychopinn.io.registry import load_scan

    return load_scan(path, units=units, threshold=threshold)
