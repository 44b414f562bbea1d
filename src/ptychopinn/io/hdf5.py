"""HDF5 scans with the NPZ key names as root datasets, read through h5py slicing.

Layout: root datasets ``diffraction`` (or ``diff3d``) ``[M, N, N]``, ``probeGuess`` ``[N, N]`` complex,
``xcoords``/``ycoords`` ``[M]`` object pixels, optional ``xcoords_start``/``ycoords_start``,
``scan_index``, ``objectGuess``, ``Y``; ``_metadata`` JSON as a string dataset or root attribute. The
mapping to :class:`~ptychopinn.data.ScanData` is :mod:`ptychopinn.io.schema`'s.

Datasets may be contiguous or chunked and compressed with any filter h5py knows, plus those of
``hdf5plugin`` (bitshuffle/LZ4, Blosc, Zstd, ... as written by Eiger and Jungfrau detectors), which is
imported before a file is opened. The diffraction stack is read chunk-aligned, one batch at a time, so
memory stays bounded; a contiguous, unfiltered float32 amplitude stack is memory-mapped through its file
offset instead (see :mod:`ptychopinn.io.schema` for when).

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
from ptychopinn.io.atomic import atomic_path
from ptychopinn.io.files import regular_file
from ptychopinn.io.schema import check_units, scan_from_source

COMPRESSIONS: tuple[str, ...] = ("none", "gzip", "lzf", "lz4", "bitshuffle-lz4", "zstd")
"""Compression choices of :func:`save_h5_scan` (the last three need ``hdf5plugin``)."""


def open_h5(path: str | os.PathLike[str], what: str = "HDF5 file") -> Any:
    """An open read-only ``h5py.File`` with the ``hdf5plugin`` filters registered.

    Raises:
        FileNotFoundError / DataFormatError: missing, not a regular file, or not readable as HDF5.
    """
    import h5py

    try:
        import hdf5plugin  # noqa: F401  (registers the detector compression filters with HDF5)
    except ImportError:  # pragma: no cover - a declared dependency; plain filters still work without it
        pass
    p = regular_file(path, what)
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataFormatError(f"{p} is not a readable HDF5 file ({text}); re-export or re-copy it") from None


def _filter_error(path: Path, key: str, exc: BaseException) -> DataFormatError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    hint = ("the dataset uses a compression filter that is not available: install hdf5plugin"
            if "filter" in text.lower() else "the file is truncated or corrupt: re-export or re-copy it")
    return DataFormatError(f"{path}: dataset '{key}' cannot be read ({text}); {hint}")


class H5Source:
    """Datasets of an open HDF5 group as an :class:`~ptychopinn.io.schema.ArraySource`.

    Args:
        path: the file (for messages and memory maps).
        group: an open ``h5py.File`` or group holding the datasets.
        names: optional ``{key: dataset path}`` aliases (default: the group's own members).
    """

    def __init__(self, path: Path, group: Any, names: dict[str, str] | None = None):
        self.path = path
        self.group = group
        self.names = names if names is not None else {k: k for k in group}

    def keys(self) -> set[str]:
        return set(self.names)

    def dataset(self, key: str) -> Any:
        import h5py

        try:
            obj = self.group[self.names[key]]
        except (KeyError, OSError, RuntimeError) as exc:
            raise _filter_error(self.path, key, exc) from None
        if not isinstance(obj, h5py.Dataset):
            raise DataFormatError(f"{self.path}: '{self.names[key]}' is a {type(obj).__name__}, expected a dataset; "
                                  "store the array itself under that name")
        return obj

    def shape(self, key: str) -> tuple[int, ...]:
        shape = self.dataset(key).shape
        if shape is None:
            raise DataFormatError(f"{self.path}: dataset '{self.names[key]}' is empty (no dataspace); store data")
        return tuple(int(d) for d in shape)

    def dtype(self, key: str) -> np.dtype:
        return np.dtype(self.dataset(key).dtype)

    def read(self, key: str) -> np.ndarray:
        dset = self.dataset(key)
        try:
            return np.asarray(dset[()])
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise _filter_error(self.path, self.names[key], exc) from None

    def batches(self, key: str, rows: int) -> Iterator[np.ndarray]:
        dset = self.dataset(key)
        chunk_rows = dset.chunks[0] if dset.chunks else 1
        step = max(chunk_rows, rows // chunk_rows * chunk_rows)  # whole chunks: each is decompressed once
        for lo in range(0, dset.shape[0], step):
            try:
                yield np.asarray(dset[lo:lo + step])
            except (OSError, RuntimeError, ValueError, TypeError) as exc:
                raise _filter_error(self.path, self.names[key], exc) from None

    def mapped(self, key: str, strict: bool = False) -> np.ndarray | None:
        dset = self.dataset(key)
        offset = dset.id.get_offset()
        native = dset.dtype.byteorder in ("=", "|", "<" if np.little_endian else ">")
        if dset.chunks is not None or dset.compression is not None or offset is None or not native \
                or dset.external:
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
        raw: Any = None
        try:
            if "_metadata" in self.group:
                raw = self.read("_metadata") if "_metadata" in self.names else self.group["_metadata"][()]
            elif "_metadata" in self.group.attrs:
                raw = self.group.attrs["_metadata"]
        except (OSError, KeyError, TypeError, DataFormatError):
            return None
        if isinstance(raw, np.ndarray):
            raw = raw.reshape(-1)[0] if raw.size == 1 else None
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        return raw if isinstance(raw, str) else None


def is_h5_scan(f: Any) -> bool:
    """True when an open HDF5 file holds the scan keys at its root."""
    return ("diffraction" in f or "diff3d" in f) and "xcoords" in f and "ycoords" in f


def load_h5_scan(path: str | os.PathLike[str], units: str = "auto", *, probe: np.ndarray | None = None,
                 mapping: str = "auto", threshold: int | None = None) -> ScanData:
    """Read an HDF5 scan with the NPZ key names (module docstring) into a :class:`ScanData`.

    Args:
        path: the HDF5 file.
        units, probe, mapping: as :func:`ptychopinn.io.npz.load_npz`.

    Returns:
        A validated scan; ``diffraction`` ``[M, N, N]`` float32 amplitude is in memory, memory-mapped
        (contiguous float32 amplitude above the mmap threshold) or in a temporary file (large compressed
        stacks).

    Raises:
        FileNotFoundError, ConfigError, DataFormatError.
    """
    check_units(units)
    with open_h5(path) as f:
        return scan_from_source(H5Source(Path(path), f), units, probe=probe, mapping=mapping, threshold=threshold)


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
