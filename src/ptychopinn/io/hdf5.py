"""HDF5 scans with the NPZ key names as root datasets, read through h5py slicing.

Layout: root datasets ``diffraction`` (or ``diff3d``) ``[M, N, N]``, ``probeGuess`` ``[N, N]`` complex,
``xcoords``/``ycoords`` ``[M]`` object pixels, optional ``xcoords_start``/``ycoords_start``,
``scan_index``, ``objectGuess``, ``Y``; ``_metadata`` JSON as a string dataset or root attribute. The
mapping to :class:`~ptychopinn.data.ScanData` is :mod:`ptychopinn.io.schema`'s.

Datasets may be contiguous or chunked and compressed with the filters of
:data:`ptychopinn.io.h5guard.ALLOWED_FILTERS` (gzip, lzf, and bitshuffle/LZ4, LZ4, Blosc, Zstd from
``hdf5plugin``, as written by Eiger and Jungfrau detectors). Every access goes through
:mod:`ptychopinn.io.h5guard` (links, external storage, virtual datasets, memory, decoding in a child process).
The diffraction stack is read chunk-aligned, one batch at a time, so memory stays bounded; a contiguous,
unfiltered float32 amplitude stack of the file itself is memory-mapped through its file offset instead (see
:mod:`ptychopinn.io.schema` for when).

h5py is imported by the functions, not at module import, so that importing ptychopinn stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.io import h5guard
from ptychopinn.io.atomic import atomic_path
from ptychopinn.io.frames import FrameOptions
from ptychopinn.io.schema import check_units, scan_from_source

COMPRESSIONS: tuple[str, ...] = ("none", "gzip", "lzf", "lz4", "bitshuffle-lz4", "zstd")
"""Compression choices of :func:`save_h5_scan` (the last three need ``hdf5plugin``)."""

open_h5 = h5guard.open_h5


class H5Source:
    """Datasets of an open HDF5 file as an :class:`~ptychopinn.io.schema.ArraySource`, every access through
    :mod:`ptychopinn.io.h5guard` (links, external storage, filters, memory, decoding in a child process).

    Args:
        path: the file (for messages and memory maps).
        group: an open file from :func:`open_h5`.
        names: optional ``{key: dataset path}`` aliases (default: the root's own members).
    """

    def __init__(self, path: Path, group: Any, names: dict[str, str] | None = None):
        self.path = path
        self.group = group
        self.names = names if names is not None else {k: k for k in group}

    def keys(self) -> set[str]:
        return set(self.names)

    def dataset(self, key: str) -> Any:
        return h5guard.dataset(self.group, self.names[key])

    def shape(self, key: str) -> tuple[int, ...]:
        shape = self.dataset(key).shape
        if shape is None:
            raise DataFormatError(f"{self.path}: dataset '{self.names[key]}' is empty (no dataspace); store data")
        return tuple(int(d) for d in shape)

    def dtype(self, key: str) -> np.dtype:
        return np.dtype(self.dataset(key).dtype)

    def read(self, key: str) -> np.ndarray:
        return h5guard.read(self.group, self.dataset(key), self.names[key])

    def batches(self, key: str, rows: int) -> Iterator[np.ndarray]:
        yield from h5guard.iter_rows(self.group, self.dataset(key), self.names[key], rows)

    def mapped(self, key: str, strict: bool = False) -> np.ndarray | None:
        dset = self.dataset(key)
        offset = dset.id.get_offset()
        native = dset.dtype.byteorder in ("=", "|", "<" if np.little_endian else ">")
        linked = os.path.realpath(dset.file.filename) != os.path.realpath(self.path)
        if dset.chunks is not None or dset.compression is not None or offset is None or not native \
                or dset.external or dset.is_virtual or linked:
            if not strict:
                return None
            layout = "chunked" if dset.chunks is not None else "contiguous"
            comp = f", compression {dset.compression}" if dset.compression is not None else ""
            order = "" if native else f", byte order {dset.dtype}"
            raise DataFormatError(
                f"{self.path}: dataset '{self.names[key]}' is {layout}{comp}{order} and cannot be memory-mapped; "
                "rewrite it as a contiguous uncompressed dataset (h5py create_dataset(..., chunks=None) with no "
                "compression), or read it with load_scan (batch by batch)"
            )
        return np.memmap(self.path, dtype=dset.dtype, mode="r", offset=int(offset), shape=tuple(dset.shape),
                         order="C")

    def metadata_text(self) -> str | None:
        """The ``_metadata`` JSON text of the file (a string dataset or root attribute), or None."""
        raw: Any = None
        if h5guard.has(self.group, "_metadata"):
            dset = h5guard.dataset(self.group, "_metadata")
            if h5guard.h5_string(dset.dtype) is None or dset.shape is None or dset.size != 1:
                return None
            raw = h5guard.read(self.group, dset, "_metadata")
            if isinstance(raw, np.ndarray):
                raw = raw.reshape(-1)[0]
            raw = h5guard.decode_text(raw, f"{self.path}: dataset '_metadata'")
        else:
            raw = h5guard.attribute(self.group, self.group, "_metadata", "the root")
        if isinstance(raw, np.ndarray):
            raw = raw.reshape(-1)[0] if raw.size == 1 else None
        return raw if isinstance(raw, str) else None


def is_h5_scan(f: Any) -> bool:
    """True when an open HDF5 file (from :func:`open_h5`) holds the scan keys at its root."""
    has = h5guard.has
    return (has(f, "diffraction") or has(f, "diff3d")) and has(f, "xcoords") and has(f, "ycoords")


def load_h5_scan(path: str | os.PathLike[str], units: str = "auto", *, probe: np.ndarray | None = None,
                 mapping: str = "auto", threshold: int | None = None, frames: FrameOptions | None = None) -> ScanData:
    """Read an HDF5 scan with the NPZ key names (module docstring) into a :class:`ScanData`.

    Args:
        path: the HDF5 file.
        units, probe, mapping, threshold, frames: as :func:`ptychopinn.io.npz.load_npz`.

    Returns:
        A validated scan; ``diffraction`` ``[M, N, N]`` float32 amplitude is in memory, memory-mapped
        (contiguous float32 amplitude above the mmap threshold) or in a temporary file (large compressed
        stacks).

    Raises:
        FileNotFoundError, ConfigError, DataFormatError.
    """
    check_units(units)
    with open_h5(path) as f:
        return scan_from_source(H5Source(Path(path), f), units, probe=probe, mapping=mapping, threshold=threshold,
                                frames=frames)


def open_h5_scan(path: str | os.PathLike[str], units: str = "amplitude") -> ScanData:
    """Open an HDF5 scan (module docstring) with the diffraction stack memory-mapped, as
    :func:`ptychopinn.io.npz.open_npz_mmap` does for an NPZ.

    Raises:
        DataFormatError: chunked/compressed diffraction (read those with ``load_scan``), not float32
            amplitude, or any ScanData validation failure.
    """
    return load_h5_scan(path, units=units, mapping="require")


def _filter_kwargs(compression: str) -> dict[str, Any]:
    if compression == "none":
        return {}
    if compression in ("gzip", "lzf"):
        return {"compression": compression}
    h5guard.register_filters()  # first, so that importing hdf5plugin here registers only the allowed filters
    import hdf5plugin

    plugin = {"lz4": lambda: hdf5plugin.LZ4(), "bitshuffle-lz4": lambda: hdf5plugin.Bitshuffle(cname="lz4"),
              "zstd": lambda: hdf5plugin.Zstd()}[compression]()
    return dict(plugin)


def save_h5_scan(path: str | os.PathLike[str], scan: ScanData, *, compression: str = "none",
                 chunk_rows: int = 16) -> Path:
    """Write a scan as an HDF5 file with the NPZ key names, atomically.

    Args:
        path: destination (missing folders are created).
        scan: the scan; arrays as :func:`ptychopinn.io.npz.save_npz` writes them (float32 amplitude
            under ``diff3d``, ``_metadata`` JSON with the physical metadata as a root attribute).
        compression: one of :data:`COMPRESSIONS`; with anything but ``'none'`` the pattern stack
            (and ``Y``) is chunked ``[chunk_rows, N, N]``; otherwise it is contiguous (memory-mappable).
        chunk_rows: patterns per chunk when compressed.

    Returns:
        The written path.
    """
    import h5py

    from ptychopinn.io.npz import scan_arrays

    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
    arrays = scan_arrays(scan)
    meta = str(arrays.pop("_metadata"))
    filters = _filter_kwargs(compression)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["_metadata"] = meta
        for key, arr in arrays.items():
            if key in ("diff3d", "Y") and filters:
                f.create_dataset(key, data=arr, chunks=(min(chunk_rows, arr.shape[0]), *arr.shape[1:]), **filters)
            else:
                f.create_dataset(key, data=arr)
    return Path(path)
