"""Larger-than-memory scans: diffraction stacks memory-mapped from disk instead of loaded.

* :func:`open_npz_mmap` maps the diffraction member of an **uncompressed** NPZ (written by
  :func:`numpy.savez` or :func:`ptychopinn.io.npz.save_npz`) in place: the member's data offset is found
  from its zip local header and its ``.npy`` header, and the stack becomes a read-only ``np.memmap``.
  The small arrays (positions, probe, object, metadata) are read normally. Keys and layouts follow
  :mod:`ptychopinn.io.npz`.
* :func:`open_h5_scan` reads a plain HDF5 file with the same keys as the NPZ contract (datasets
  ``diffraction`` or ``diff3d``, ``probeGuess``, ``xcoords``, ``ycoords``, ...). An uncompressed,
  contiguous diffraction dataset is memory-mapped through its file offset (``dataset.id.get_offset()``).
  Chunked or compressed datasets cannot be mapped and are refused with a clear error (``ScanData``
  holds numpy arrays only; an h5py dataset wrapper would be read whole by ``np.asarray``).

The returned :class:`~ptychopinn.data.ScanData` is used like any other: training gathers one batch at a
time from the map (``GroupedDataset.__getitems__``), inference streams batches (``reconstruct``), and
validation checks the patterns in chunks of 256, releasing each chunk's pages afterwards.

Memory note: pages of a memory-mapped file that were read count as *file-backed* resident memory
(``RssFile``) until the kernel reclaims them; they are clean page cache and are dropped under memory
pressure, so a file larger than RAM can be processed. Anonymous memory (``RssAnon``) stays bounded by the
model, one batch and the canvas.

Requirements for mapping: the stored patterns must already be float32 amplitude (``sqrt(counts)``), in
``[M, N, N]`` (or ``[M, N, N, 1]``) layout, C or Fortran order. Anything that would need a full-size
conversion (counts -> amplitude, float64 -> float32, legacy ``[N, N, M]``) raises DataFormatError with the
re-save recipe rather than silently reading gigabytes into memory.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.io.npz import (
    REQUIRED_KEYS,
    UNITS_METADATA_KEY,
    _array_headers,
    _coords,
    _diffraction_key,
    _NpzReader,
    _object_layout,
    _probe_layout,
    _read_metadata,
)

__all__ = ["MMAP_UNITS", "load_scan_auto", "npz_is_mappable", "open_h5_scan", "open_npz_mmap", "should_mmap"]

MMAP_UNITS = ("amplitude", "auto")
"""``units`` accepted by the mapping readers (a counts -> amplitude conversion would copy the stack)."""

DEFAULT_MMAP_THRESHOLD = 1 << 30
"""File size (bytes) above which :func:`should_mmap` picks the memory-mapped reader (1 GiB)."""

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header, 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"


def _member_data_offset(path: Path, zf: zipfile.ZipFile, member: str) -> int:
    """Byte offset in ``path`` where the stored (uncompressed) data of zip ``member`` begins."""
    info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        key = member[: -len(".npy")]
        raise DataFormatError(
            f"{path}: member '{key}' is compressed ({_compression_name(info.compress_type)}) and cannot be "
            "memory-mapped; re-save the scan uncompressed with numpy.savez (not savez_compressed) or "
            "ptychopinn.io.npz.save_npz, or load it into memory with load_npz"
        )
    if info.flag_bits & 0x1:
        raise DataFormatError(f"{path}: member '{member}' is encrypted; re-save the scan with numpy.savez")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        raw = fh.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size:
        raise DataFormatError(f"{path}: truncated zip local header for '{member}'; re-copy the file")
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != _LOCAL_MAGIC:
        raise DataFormatError(f"{path}: bad zip local header for '{member}'; the file is corrupt: re-copy it")
    name_len, extra_len = fields[9], fields[10]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def _compression_name(kind: int) -> str:
    return {zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}.get(
        kind, f"method {kind}")


def _read_npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    # (3, 0) only differs by utf-8 field names; numpy exposes no public reader for it
    return np.lib.format._read_array_header(fh, version)  # noqa: SLF001


def _map_npz_member(path: Path, zf: zipfile.ZipFile, key: str) -> np.memmap:
    """Read-only memmap of array ``key`` stored uncompressed in the NPZ at ``path``."""
    member = f"{key}.npy"
    start = _member_data_offset(path, zf, member)
    with open(path, "rb") as fh:
        fh.seek(start)
        shape, fortran, dtype = _read_npy_header(fh)
        data_offset = fh.tell()
    if dtype.hasobject:
        raise DataFormatError(f"{path}: '{key}' holds a pickled object array, which is never loaded; "
                              "re-save it as a plain numeric array")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data_offset + nbytes > os.path.getsize(path):
        raise DataFormatError(f"{path}: '{key}' is truncated ({nbytes} bytes expected); re-copy the file")
    if nbytes == 0:
        return np.zeros(shape, dtype)  # type: ignore[return-value]  # mmap cannot map 0 bytes
    return np.memmap(path, dtype=dtype, mode="r", offset=data_offset, shape=tuple(shape),
                     order="F" if fortran else "C")


def _mappable_stack(arr: np.ndarray, m: int, key: str, path: Path, *, what: str) -> np.ndarray:
    """Squeeze a trailing channel (a view) and refuse layouts that would need a copy."""
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or arr.shape[0] != m:
        hint = (" (legacy [N, N, M] layout: re-save it as [M, N, N], e.g. np.moveaxis(a, 2, 0))"
                if arr.ndim == 3 and arr.shape[2] == m else "")
        raise DataFormatError(f"{path}: '{key}' must be ({m}, N, N) {what} to be memory-mapped, found "
                              f"{describe_array(arr)}{hint}")
    return arr


def _check_units(units: str) -> None:
    if units not in MMAP_UNITS:
        raise ConfigError(f"units must be one of {', '.join(MMAP_UNITS)} for a memory-mapped scan, got "
                          f"{units!r}; convert counts to amplitude once (load_npz(..., units='intensity') "
                          "then save_npz) so the stack can be mapped")


def _checked_amplitude(diff: np.ndarray, key: str, path: Path, metadata: dict[str, Any], units: str) -> None:
    stated = metadata.get(UNITS_METADATA_KEY)
    if diff.dtype != np.float32 or stated == "intensity":
        found = "intensity (per _metadata)" if stated == "intensity" else f"dtype {diff.dtype}"
        raise DataFormatError(
            f"{path}: '{key}' must be float32 amplitude sqrt(counts) to be memory-mapped, found {found}; "
            "convert once with load_npz(...) + save_npz(...) (writes float32 amplitude), "
            "or load it into memory with load_npz"
        )
    metadata.pop(UNITS_METADATA_KEY, None)
    metadata["input_units"] = "amplitude"
    if units == "auto":
        metadata["units_detected"] = "amplitude"


def npz_is_mappable(path: str | os.PathLike[str]) -> bool:
    """True when the NPZ's diffraction member is stored uncompressed (so it can be memory-mapped)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for key in ("diffraction", "diff3d"):
                if f"{key}.npy" in names:
                    return zf.getinfo(f"{key}.npy").compress_type == zipfile.ZIP_STORED
    except (zipfile.BadZipFile, OSError):
        return False
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
        path: an uncompressed ``.npz`` following the contract of :mod:`ptychopinn.io.npz`.
        units: ``'amplitude'`` or ``'auto'`` (accepted when the stack is float32 and ``_metadata`` does not
            say intensity). Counts cannot be mapped (the square root would copy the stack).

    Returns:
        A validated :class:`ScanData` whose ``diffraction`` is a view of a read-only ``np.memmap``
        ``[M, N, N]`` float32 (``Y``, if present as complex64, is mapped too); positions, probe, object
        and metadata are in memory.

    Raises:
        FileNotFoundError: no such file. ConfigError: unsupported ``units``.
        DataFormatError: compressed member (re-save with ``np.savez``), not float32 amplitude, bad layout,
            missing keys, or any ScanData validation failure.
    """
    path = Path(path)
    _check_units(units)
    if not path.exists():
        raise FileNotFoundError(f"NPZ file not found: {path}")
    headers = _array_headers(path)  # raises DataFormatError for a non-zip file
    try:
        npz = np.load(path, allow_pickle=False, mmap_mode=None)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path} is not a readable NPZ file ({type(exc).__name__}: {exc})") from exc
    with npz, zipfile.ZipFile(path) as zf:
        reader = _NpzReader(path, npz, headers)
        missing = [k for k in REQUIRED_KEYS if not any(alt in reader.keys for alt in k.split("|"))]
        if missing:
            raise DataFormatError(f"{path}: missing required keys {missing}; found keys {sorted(reader.keys)}")
        metadata = _read_metadata(reader)
        x, y = _coords(reader, "xcoords"), _coords(reader, "ycoords")
        if x.shape != y.shape:
            raise DataFormatError(f"{path}: xcoords has {x.size} entries but ycoords has {y.size}")
        m = x.size
        key = _diffraction_key(reader)
        diff = _mappable_stack(_map_npz_member(path, zf, key), m, key, path, what="amplitude")
        _checked_amplitude(diff, key, path, metadata, units)
        positions_start = None
        if "xcoords_start" in reader.keys and "ycoords_start" in reader.keys:
            positions_start = np.stack([_coords(reader, "xcoords_start"), _coords(reader, "ycoords_start")], 1)
        scan_index = reader.get("scan_index").reshape(-1) if "scan_index" in reader.keys else None
        obj = _object_layout(reader.get("objectGuess"), path) if "objectGuess" in reader.keys else None
        patches = None
        if "Y" in reader.keys:
            y_hdr = headers.get("Y")
            if y_hdr is not None and y_hdr[1] == np.complex64 and \
                    zf.getinfo("Y.npy").compress_type == zipfile.ZIP_STORED:
                patches = _mappable_stack(_map_npz_member(path, zf, "Y"), m, "Y", path, what="complex64")
            else:
                patches = reader.get("Y")
        probe = _probe_layout(reader.get("probeGuess"), path)
    try:
        return ScanData(diffraction=diff, positions=np.stack([x, y], axis=1), probe=probe, obj=obj,
                        positions_start=positions_start, scan_index=scan_index, patches=patches,
                        metadata=metadata)
    except DataFormatError as exc:
        raise DataFormatError(f"{path}: {exc}") from exc


# -------------------------------------------------------------------------------------------- HDF5
def _h5_map(path: Path, dset: Any, key: str) -> np.memmap:
    """Memory-map a contiguous, unfiltered HDF5 dataset via its file offset."""
    offset = dset.id.get_offset()
    if dset.chunks is not None or dset.compression is not None or offset is None:
        layout = "chunked" if dset.chunks is not None else "contiguous"
        comp = f", compression {dset.compression}" if dset.compression is not None else ""
        raise DataFormatError(
            f"{path}: dataset '{key}' is {layout}{comp} and cannot be memory-mapped; rewrite it as a "
            "contiguous uncompressed dataset (h5py create_dataset(..., chunks=None) with no compression) "
            "or convert the file to an uncompressed NPZ"
        )
    if dset.dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
        raise DataFormatError(f"{path}: dataset '{key}' has non-native byte order {dset.dtype}; rewrite it")
    return np.memmap(path, dtype=dset.dtype, mode="r", offset=int(offset), shape=tuple(dset.shape), order="C")


def _h5_metadata(f: Any) -> dict[str, Any]:
    raw: Any = None
    if "_metadata" in f:
        raw = f["_metadata"][()]
    elif "_metadata" in f.attrs:
        raw = f.attrs["_metadata"]
    if raw is None:
        return {}
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1)[0] if raw.size else ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def open_h5_scan(path: str | os.PathLike[str], units: str = "amplitude") -> ScanData:
    """Open a plain HDF5 scan (NPZ-contract keys as datasets) with the diffraction stack memory-mapped.

    Layout: datasets ``diffraction`` (or ``diff3d``) ``[M, N, N]`` float32 amplitude, contiguous and
    uncompressed; ``probeGuess`` ``[N, N]`` complex; ``xcoords``/``ycoords`` ``[M]``; optional
    ``xcoords_start``/``ycoords_start``, ``scan_index``, ``objectGuess``, ``Y``; ``_metadata`` JSON as a
    string dataset or root attribute.

    Raises:
        DataFormatError: missing keys, chunked/compressed diffraction (cannot be mapped), not float32
            amplitude, or any ScanData validation failure.
    """
    import h5py

    path = Path(path)
    _check_units(units)
    if not path.exists():
        raise FileNotFoundError(f"HDF5 file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataFormatError(f"{path} is not a readable HDF5 file ({exc})") from exc
    with f:
        key = "diffraction" if "diffraction" in f else "diff3d" if "diff3d" in f else None
        missing = [k for k in ("probeGuess", "xcoords", "ycoords") if k not in f]
        if key is None:
            missing.insert(0, "diffraction|diff3d")
        if missing:
            raise DataFormatError(f"{path}: missing required datasets {missing}; found {sorted(f.keys())}")
        metadata = _h5_metadata(f)
        x = np.asarray(f["xcoords"][()], dtype=np.float64).reshape(-1)
        y = np.asarray(f["ycoords"][()], dtype=np.float64).reshape(-1)
        m = x.size
        diff = _mappable_stack(_h5_map(path, f[key], key), m, key, path, what="amplitude")
        _checked_amplitude(diff, key, path, metadata, units)
        positions_start = None
        if "xcoords_start" in f and "ycoords_start" in f:
            positions_start = np.stack([np.asarray(f["xcoords_start"][()], np.float64).reshape(-1),
                                        np.asarray(f["ycoords_start"][()], np.float64).reshape(-1)], 1)
        scan_index = np.asarray(f["scan_index"][()]).reshape(-1) if "scan_index" in f else None
        obj = _object_layout(np.asarray(f["objectGuess"][()]), path) if "objectGuess" in f else None
        patches = np.asarray(f["Y"][()]) if "Y" in f else None
        probe = _probe_layout(np.asarray(f["probeGuess"][()]), path)
    try:
        return ScanData(diffraction=diff, positions=np.stack([x, y], axis=1), probe=probe, obj=obj,
                        positions_start=positions_start, scan_index=scan_index, patches=patches,
                        metadata=metadata)
    except DataFormatError as exc:
        raise DataFormatError(f"{path}: {exc}") from exc


def load_scan_auto(path: str | os.PathLike[str], units: str = "auto",
                   threshold: int | None = None) -> ScanData:
    """``open_npz_mmap`` for an uncompressed NPZ larger than ``threshold`` bytes, else ``load_npz``.

    ``threshold`` defaults to the environment variable ``PTYCHOPINN_MMAP_THRESHOLD`` (bytes) or 1 GiB.
    When the big file cannot be mapped without a full-size conversion (counts, float64, legacy layout),
    it is loaded into memory with :func:`~ptychopinn.io.npz.load_npz` after a logged warning.
    """
    import logging

    from ptychopinn.io.npz import load_npz

    if threshold is None:
        threshold = int(os.environ.get("PTYCHOPINN_MMAP_THRESHOLD", DEFAULT_MMAP_THRESHOLD))
    if units in MMAP_UNITS and should_mmap(path, threshold):
        try:
            return open_npz_mmap(path, units=units)
        except DataFormatError as exc:
            if "must be float32 amplitude" not in str(exc) and "to be memory-mapped" not in str(exc):
                raise
            logging.getLogger(__name__).warning("%s: not memory-mappable (%s); loading it into memory",
                                                path, exc)
    return load_npz(path, units=units)
