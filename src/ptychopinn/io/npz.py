"""The PtychoPINN NPZ scan file <-> :class:`~ptychopinn.data.ScanData`.

The keys, their shapes and the layouts tolerated are those of :mod:`ptychopinn.io.schema` (the one
mapping from file keys to ``ScanData``, shared with the HDF5 format).

Other keys (e.g. ptychodus's ``bad_pixels``) are ignored and never loaded.

Layouts tolerated on reading: a trailing channel axis ``[M, N, N, 1]`` (diffraction, ``Y``), the
legacy ``[N, N, M]`` stacking (transposed when only the last axis equals ``len(xcoords)``), and
probes stored as ``(1, N, N)`` modes-first (ptychodus), ``(1, 1, N, N)`` or ``(N, N, 1)``.

Safety: files are opened with ``allow_pickle=False``. Array headers are inspected first, so an
object (pickled) array is reported by key name without ever being unpickled; a pickled
``_metadata`` is skipped with a warning.

The key schema and its validation live in :mod:`ptychopinn.io.schema` (shared with the HDF5 format);
this module reads the zip container: member headers are parsed first (shapes and dtypes, nothing
unpickled), members are read with :mod:`zipfile` directly (a stack batch by batch), and an
uncompressed member can be memory-mapped in place. Zip-level damage (a corrupt central directory,
an unsupported compression method, an encrypted member, a CRC error) becomes a one-line
DataFormatError.

Writing uses :func:`numpy.savez` (uncompressed, so arrays can later be memory-mapped) through
:func:`ptychopinn.io.atomic.atomic_write`, so a reader never sees a half-written file. Diffraction
is written as amplitude under ``diff3d`` (the name legacy readers index) and ``_metadata`` records
``diffraction_units = 'amplitude'``, which ``units='auto'`` honours on reading.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ptychopinn.data.scan import ScanData
from ptychopinn.errors import DataFormatError, PtychoInputError
from ptychopinn.io.atomic import atomic_write
from ptychopinn.io.files import check_allocation, container, regular_file
from ptychopinn.io.frames import FrameOptions
from ptychopinn.io.schema import REQUIRED_KEYS, UNITS_METADATA_KEY, check_units, scan_from_source

logger = logging.getLogger(__name__)

__all__ = ["REQUIRED_KEYS", "UNITS_METADATA_KEY", "NpzSource", "describe_npz", "load_npz", "npz_is_mappable",
           "open_npz_mmap", "save_npz"]

_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                          zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, NotImplementedError,
               RuntimeError, ValueError, struct.error, LookupError)
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header, 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"


def _not_npz(path: Path, exc: BaseException) -> DataFormatError:
    if container(path) == "npy":
        return DataFormatError(f"{path} is a single .npy array, not an NPZ archive; save the scan with numpy.savez "
                               "and named keys (diff3d, probeGuess, xcoords, ycoords, ...)")
    text = str(exc).splitlines()[0] if str(exc) else ""
    return DataFormatError(f"{path} is not a readable NPZ file ({type(exc).__name__}: {text}); expected a zip "
                           "archive written by numpy.savez; re-export or re-copy the file")


def _read_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version in ((2, 0), (3, 0)):  # 3.0 differs only by allowing utf-8 in the header text
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


class _Member:
    __slots__ = ("info", "shape", "fortran", "dtype")

    def __init__(self, info: zipfile.ZipInfo, shape: tuple[int, ...], fortran: bool, dtype: np.dtype):
        self.info, self.shape, self.fortran, self.dtype = info, shape, fortran, dtype


class NpzSource:
    """The ``.npy`` members of an NPZ file as an :class:`~ptychopinn.io.schema.ArraySource`.

    Opening parses every member header (shape, dtype, order) without reading data and refuses encrypted
    members, unsupported compression and headers that declare more bytes than the member holds. Use as a
    context manager (closes the zip).
    """

    def __init__(self, path: str | os.PathLike[str], *, fileobj: IO[bytes] | None = None):
        self.path = regular_file(path, "NPZ file")
        self.members: dict[str, _Member] = {}
        self.other: dict[str, str] = {}  # members whose header could not be parsed: key -> reason
        # fileobj: the NPZ bytes when they are not the file at `path` itself (e.g. decompressed from it); `path`
        # then only names the file in messages, and nothing is memory-mapped
        self._fileobj = fileobj
        try:
            self._zf = zipfile.ZipFile(self.path if fileobj is None else fileobj)
        except _ZIP_ERRORS as exc:
            raise _not_npz(self.path, exc) from exc
        try:
            for info in self._zf.infolist():
                if info.filename.endswith(".npy"):
                    self._add(info)
        except BaseException:
            self._zf.close()
            raise

    def _add(self, info: zipfile.ZipInfo) -> None:
        key = info.filename[: -len(".npy")]
        if info.flag_bits & 0x1:
            raise DataFormatError(f"{self.path}: member '{key}' is encrypted; ptychopinn reads no passwords: re-save "
                                  "the scan with numpy.savez")
        if info.compress_type not in _SUPPORTED_COMPRESSION:
            raise DataFormatError(f"{self.path}: member '{key}' uses zip compression method {info.compress_type}, "
                                  "which Python cannot read; re-save the scan with numpy.savez (or savez_compressed)")
        try:
            with self._zf.open(info) as fh:
                shape, fortran, dtype = _read_header(fh)
                data_bytes = info.file_size - fh.tell()
        except ValueError as exc:
            self.other[key] = str(exc)
            return
        except _ZIP_ERRORS as exc:
            raise self._unreadable(key, exc) from exc
        declared = math.prod(int(d) for d in shape) * dtype.itemsize
        if not dtype.hasobject and declared > data_bytes:
            # a reader would allocate the declared shape before reading: refuse a lying header
            raise DataFormatError(
                f"{self.path}: key '{key}' declares shape {tuple(shape)} dtype {dtype} ({declared} bytes) but "
                f"holds only {max(data_bytes, 0)} bytes of data; the file is truncated or corrupt: "
                "re-export or re-copy it"
            )
        self.members[key] = _Member(info, tuple(int(d) for d in shape), bool(fortran), dtype)

    def __enter__(self) -> NpzSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zf.close()

    # ------------------------------------------------------------------ ArraySource
    def keys(self) -> set[str]:
        return set(self.members) | set(self.other)

    def _member(self, key: str) -> _Member:
        if key in self.other:
            raise DataFormatError(f"{self.path}: key '{key}' is not a readable .npy array ({self.other[key]}); "
                                  "re-save it with numpy.savez")
        member = self.members[key]
        if member.dtype.hasobject:
            raise DataFormatError(
                f"{self.path}: key '{key}' holds a pickled object array, which this reader refuses to load for "
                f"safety (unpickling can run code); re-save it as a plain numeric array, e.g. "
                f"np.savez(out, {key}=np.asarray(data['{key}'], dtype=float))"
            )
        return member

    def shape(self, key: str) -> tuple[int, ...]:
        return self._member(key).shape

    def dtype(self, key: str) -> np.dtype:
        return self._member(key).dtype

    def _unreadable(self, key: str, exc: BaseException) -> DataFormatError:
        text = str(exc).splitlines()[0] if str(exc) else ""
        return DataFormatError(f"{self.path} is not a readable NPZ file (key '{key}': {type(exc).__name__}: {text}); "
                               "the file is probably truncated or corrupt: re-export or re-copy it")

    def read(self, key: str) -> np.ndarray:
        member = self._member(key)
        try:
            with self._zf.open(member.info) as fh:
                return np.lib.format.read_array(fh, allow_pickle=False)
        except _ZIP_ERRORS as exc:
            raise self._unreadable(key, exc) from exc

    def batches(self, key: str, rows: int) -> Iterator[np.ndarray]:
        member = self._member(key)
        if member.fortran and len(member.shape) > 1:
            # Fortran order cannot be cut into rows while streaming: read it whole (size-checked)
            check_allocation(self.path, f"'{key}' (Fortran order)", member.shape, member.dtype.itemsize)
            arr = self.read(key)
            for lo in range(0, member.shape[0], rows):
                yield arr[lo:lo + rows]
            return
        row_bytes = math.prod(member.shape[1:]) * member.dtype.itemsize
        try:
            with self._zf.open(member.info) as fh:
                _read_header(fh)
                for lo in range(0, member.shape[0], rows):
                    k = min(rows, member.shape[0] - lo)
                    raw = fh.read(k * row_bytes)
                    if len(raw) != k * row_bytes:
                        raise EOFError(f"member ends after {lo * row_bytes + len(raw)} bytes of data")
                    yield np.frombuffer(raw, dtype=member.dtype).reshape((k, *member.shape[1:]))
                fh.read(1)  # reach the end of the member so its CRC is checked
        except _ZIP_ERRORS as exc:
            raise self._unreadable(key, exc) from exc

    def view(self, key: str, shape: tuple[int, ...]) -> None:
        """Read member ``key`` as ``shape`` from now on: the same C-ordered values, e.g. leading axes of length 1
        dropped so that :meth:`batches` runs over the patterns.

        Raises:
            DataFormatError: a different number of values, or a Fortran-ordered member.
        """
        member = self._member(key)
        if math.prod(shape) != math.prod(member.shape) or (member.fortran and len(member.shape) > 1):
            raise DataFormatError(f"{self.path}: key '{key}' of shape {member.shape} cannot be read as {shape}")
        member.shape = tuple(int(d) for d in shape)

    def mapped(self, key: str, strict: bool = False) -> np.ndarray | None:
        member = self._member(key)
        if self._fileobj is not None:
            if not strict:
                return None
            raise DataFormatError(f"{self.path}: '{key}' is stored compressed and cannot be memory-mapped; "
                                  "decompress it into a plain NPZ, or load it into memory with load_scan")
        if member.info.compress_type != zipfile.ZIP_STORED:
            if not strict:
                return None
            raise DataFormatError(
                f"{self.path}: member '{key}' is compressed ({_SUPPORTED_COMPRESSION[member.info.compress_type]}) and "
                "cannot be memory-mapped; re-save the scan uncompressed with numpy.savez (not savez_compressed) or "
                "ptychopinn.io.npz.save_npz, or load it into memory with load_scan"
            )
        with open(self.path, "rb") as fh:
            fh.seek(member.info.header_offset)
            raw = fh.read(_LOCAL_HEADER.size)
            if len(raw) != _LOCAL_HEADER.size or _LOCAL_HEADER.unpack(raw)[0] != _LOCAL_MAGIC:
                raise DataFormatError(f"{self.path}: bad zip local header for '{key}'; the file is corrupt: re-copy it")
            fields = _LOCAL_HEADER.unpack(raw)
            fh.seek(member.info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10])
            _read_header(fh)
            offset = fh.tell()
        nbytes = math.prod(member.shape) * member.dtype.itemsize
        if offset + nbytes > self.path.stat().st_size:
            raise DataFormatError(f"{self.path}: '{key}' is truncated ({nbytes} bytes expected); re-copy the file")
        if nbytes == 0:
            return np.zeros(member.shape, member.dtype)
        return np.memmap(self.path, dtype=member.dtype, mode="r", offset=offset, shape=member.shape,
                         order="F" if member.fortran else "C")

    def metadata_text(self) -> str | None:
        if "_metadata" not in self.keys():
            return None
        member = self.members.get("_metadata")
        if member is None or member.dtype.hasobject:
            warnings.warn(f"{self.path}: '_metadata' is a pickled object array; skipped without unpickling "
                          "(re-save it as np.array(json.dumps(meta)) to keep it)", UserWarning, stacklevel=4)
            return None
        if member.dtype.kind not in "US" or math.prod(member.shape) != 1 or member.info.file_size > 1 << 24:
            warnings.warn(f"{self.path}: '_metadata' is shape={member.shape} dtype={member.dtype}, not a JSON "
                          "string; skipped", UserWarning, stacklevel=4)
            return None
        text = self.read("_metadata").reshape(()).item()
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)

    def is_mappable(self, key: str) -> bool:
        return (self._fileobj is None and key in self.members
                and self.members[key].info.compress_type == zipfile.ZIP_STORED)


# ---------------------------------------------------------------------------------------- reading
def load_npz(path: str | os.PathLike[str], units: str = "auto", *, probe: np.ndarray | None = None,
             mapping: str = "auto", threshold: int | None = None, frames: FrameOptions | None = None) -> ScanData:
    """Read a scan NPZ (the PtychoPINN contract, ptychodus exports, legacy layouts) into a ScanData.

    Args:
        path: the ``.npz`` file.
        units: units of the stored patterns: ``'amplitude'``, ``'intensity'`` (counts; square root
            taken) or ``'auto'``. With ``'auto'``, a ``_metadata['diffraction_units']`` entry is trusted
            if present, else the rule of :mod:`ptychopinn.io.units` decides.
        probe: ``[N, N]`` complex probe to use instead of (or in the absence of) ``probeGuess``.
        mapping: ``'auto'`` (stacks above the mmap threshold stay on disk), ``'never'`` or ``'require'``
            (see :func:`ptychopinn.io.schema.scan_from_source`).
        threshold: bytes above which the stack stays on disk (default ``$PTYCHOPINN_MMAP_THRESHOLD``).
        frames: crop window and mirrored axes (:mod:`ptychopinn.io.frames`); None = as stored.

    Returns:
        A validated :class:`ScanData` holding float32 amplitude ``[M, N, N]``, positions ``[M, 2]``
        float64 in object pixels, probe ``[N, N]`` complex64 and the optional fields found.
        ``metadata`` holds the file's ``_metadata`` plus ``input_units`` (and ``units_detected``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: bad ``units``.
        DataFormatError: not a readable NPZ, pickled arrays, missing keys, bad shapes or values.
    """
    check_units(units)
    with NpzSource(path) as src:
        return scan_from_source(src, units, probe=probe, mapping=mapping, threshold=threshold, frames=frames)


def open_npz_mmap(path: str | os.PathLike[str], units: str = "amplitude") -> ScanData:
    """Open a scan NPZ with its diffraction stack memory-mapped (read-only) instead of loaded.

    For scans larger than memory: training gathers one batch at a time from the map and inference streams
    batches. Pages read count as file-backed resident memory (clean page cache the kernel reclaims under
    pressure), so a file larger than RAM can be processed.

    Args:
        path: an uncompressed ``.npz`` (:func:`numpy.savez` or :func:`save_npz`) following the contract of
            :mod:`ptychopinn.io.schema`.
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
    return load_npz(path, units=units, mapping="require")


def npz_is_mappable(path: str | os.PathLike[str]) -> bool:
    """True when the NPZ's diffraction member is stored uncompressed (so it can be memory-mapped)."""
    try:
        with NpzSource(path) as src:
            return any(src.is_mappable(k) for k in ("diffraction", "diff3d") if k in src.members)
    except (PtychoInputError, OSError):
        return False


# ---------------------------------------------------------------------------------------- writing
def save_npz(path: str | os.PathLike[str], scan: ScanData, *, legacy_names: bool = True) -> Path:
    """Write a scan as an uncompressed NPZ, atomically.

    Args:
        path: destination; the name is used exactly as given (no ``.npz`` is appended).
            Missing parent directories are created.
        scan: the scan to write.
        legacy_names: store the patterns under ``diff3d`` (read by legacy tools and ptychodus-era
            readers) when True, else under ``diffraction``.

    Returns:
        The path of the written file.

    Keys written: ``diff3d``/``diffraction`` [M, N, N] float32 amplitude, ``xcoords``, ``ycoords``,
    ``xcoords_start``, ``ycoords_start`` [M] float64 (the nominal positions, or the positions when
    there are none), ``scan_index`` [M] int64 (zeros when absent), ``probeGuess`` [N, N] complex64,
    optional ``objectGuess`` [H, W] complex64 and ``Y`` [M, N, N] complex64, and ``_metadata`` (a 0-d
    unicode array holding JSON, readable without pickle; it also carries the physical metadata).
    """
    # Any: numpy's stub lets ** keyword arrays fill its allow_pickle: bool parameter
    arrays: dict[str, Any] = scan_arrays(scan, legacy_names=legacy_names)
    with atomic_write(path) as fh:
        # writing through a file object keeps numpy from appending '.npz' to the name
        np.savez(fh, **arrays)
    return Path(path)


def scan_arrays(scan: ScanData, *, legacy_names: bool = True) -> dict[str, np.ndarray]:
    """The arrays of the scan key schema for ``scan`` (shared by the NPZ and HDF5 writers)."""
    start = scan.positions if scan.positions_start is None else scan.positions_start
    arrays: dict[str, np.ndarray] = {
        ("diff3d" if legacy_names else "diffraction"): scan.diffraction,
        "xcoords": scan.positions[:, 0].copy(),
        "ycoords": scan.positions[:, 1].copy(),
        "xcoords_start": start[:, 0].copy(),
        "ycoords_start": start[:, 1].copy(),
        "scan_index": (np.zeros(scan.n_points, np.int64) if scan.scan_index is None else scan.scan_index),
        "probeGuess": scan.probe,
    }
    if scan.obj is not None:
        arrays["objectGuess"] = scan.obj
    if scan.patches is not None:
        arrays["Y"] = scan.patches
    meta = dict(scan.metadata)
    meta[UNITS_METADATA_KEY] = "amplitude"
    meta.update(scan.physical())
    if scan.valid_pixels is not None:
        arrays["valid_pixels"] = scan.valid_pixels.astype(np.uint8)
    arrays["_metadata"] = np.array(json.dumps(meta))
    return arrays


# ---------------------------------------------------------------------------------------- inspection
def describe_npz(path: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """Summarise an NPZ for humans (the ``info`` command) without raising for bad files; ``options`` as
    :func:`ptychopinn.io.registry.load_scan` (crop, flips).

    Returns:
        A JSON-serialisable dict: ``path``; ``keys`` mapping each member to ``{'shape', 'dtype'}``
        (read from headers, nothing unpickled); when the file is a valid scan also ``n_points``,
        ``N``, ``object_shape``, ``input_units`` and ``metadata``; ``errors``, a list of one-line
        problems (empty when the file loads as a valid scan); and ``valid`` (bool).
    """
    p = Path(path)
    info: dict[str, Any] = {"path": str(p), "keys": {}, "errors": [], "valid": False}
    try:
        with NpzSource(p) as src:
            info["keys"] = {k: {"shape": list(m.shape), "dtype": str(m.dtype)} for k, m in sorted(src.members.items())}
    except (PtychoInputError, OSError) as exc:
        info["errors"].append(str(exc))
        return info
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scan = load_npz(p, units="auto", frames=FrameOptions.of(options))
    except (PtychoInputError, OSError) as exc:
        info["errors"].append(str(exc))
        return info
    info["warnings"] = [str(w.message) for w in caught]
    info.update(valid=True, **describe_scan(scan))
    return info


def describe_scan(scan: ScanData) -> dict[str, Any]:
    """The JSON-serialisable summary of a loaded scan shown by ``info``."""
    return {"n_points": scan.n_points, "N": scan.N,
            "object_shape": None if scan.obj is None else list(scan.obj.shape),
            "input_units": scan.metadata.get("input_units"), **scan.physical(), "metadata": scan.metadata}
