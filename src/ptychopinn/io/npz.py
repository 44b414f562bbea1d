"""The PtychoPINN NPZ scan file <-> :class:`~ptychopinn.data.ScanData`.

Keys read (shapes after the layout fixes below; M = scan points, N = pattern size):

==================  =============  =====================================================
key                 shape          meaning
==================  =============  =====================================================
``diffraction``     [M, N, N]      patterns (amplitude or counts, see ``units``)
or ``diff3d``                      legacy name; if both exist ``diffraction`` is used
``probeGuess``      [N, N]         complex probe
``xcoords``         [M]            x (column) of each probe centre, object pixels
``ycoords``         [M]            y (row), object pixels
``xcoords_start``   [M]            optional nominal x (both ``_start`` keys or neither)
``ycoords_start``   [M]            optional nominal y
``scan_index``      [M]            optional integer scan numbers
``objectGuess``     [H, W]         optional complex ground-truth object
``Y``               [M, N, N]      optional complex ground-truth patches
``_metadata``       0-d str        optional JSON provenance
==================  =============  =====================================================

Other keys (e.g. ptychodus's ``bad_pixels``) are ignored and never loaded.

Layouts tolerated on reading: a trailing channel axis ``[M, N, N, 1]`` (diffraction, ``Y``), the
legacy ``[N, N, M]`` stacking (transposed when only the last axis equals ``len(xcoords)``), and
probes stored as ``(1, N, N)`` modes-first (ptychodus), ``(1, 1, N, N)`` or ``(N, N, 1)``.

Safety: files are opened with ``allow_pickle=False``. Array headers are inspected first, so an
object (pickled) array is reported by key name without ever being unpickled; a pickled
``_metadata`` is skipped with a warning.

Writing uses :func:`numpy.savez` (uncompressed, so arrays can later be memory-mapped) into a
temporary file in the target directory, then :func:`os.replace`, so a reader never sees a
half-written file. Diffraction is written as amplitude under ``diff3d`` (the name legacy readers
index) and ``_metadata`` records ``diffraction_units = 'amplitude'``, which ``units='auto'`` honours
on reading.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError, PtychoInputError, describe_array
from ptychopinn.io.units import UNITS_CHOICES, to_amplitude

logger = logging.getLogger(__name__)

REQUIRED_KEYS: tuple[str, ...] = ("diffraction|diff3d", "probeGuess", "xcoords", "ycoords")
"""Keys every scan NPZ must hold (``a|b`` means either name)."""

UNITS_METADATA_KEY = "diffraction_units"
"""``_metadata`` entry that states the units of the stored patterns."""


# ---------------------------------------------------------------------------------------- reading
def _array_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every member of an NPZ, read from the .npy headers without loading data.

    Returns:
        ``{key: (shape, dtype)}`` for members whose header could be parsed (format versions 1 and 2).

    Raises:
        DataFormatError: the file is not a readable zip archive.
    """
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.endswith(".npy"):
                    continue
                with zf.open(info) as fh:
                    try:
                        version = np.lib.format.read_magic(fh)
                        if version == (1, 0):
                            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                        elif version == (2, 0):
                            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                        else:
                            continue  # rare v3 headers: np.load checks them later
                    except ValueError:
                        continue
                    data_bytes = info.file_size - fh.tell()
                key = name[: -len(".npy")]
                declared = math.prod(int(d) for d in shape) * dtype.itemsize
                if not dtype.hasobject and declared > data_bytes:
                    # np.load would allocate the declared shape before reading: refuse a lying header
                    raise DataFormatError(
                        f"{path}: key '{key}' declares shape {tuple(shape)} dtype {dtype} ({declared} bytes) but "
                        f"holds only {max(data_bytes, 0)} bytes of data; the file is truncated or corrupt: "
                        "re-export or re-copy it"
                    )
                headers[key] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        if _starts_with(path, b"\x93NUMPY"):
            raise DataFormatError(
                f"{path} is a single .npy array, not an NPZ archive; save the scan with numpy.savez "
                "and named keys (diff3d, probeGuess, xcoords, ycoords, ...)"
            ) from exc
        raise DataFormatError(
            f"{path} is not a readable NPZ file ({type(exc).__name__}: {exc}); "
            "expected a zip archive written by numpy.savez; re-export or re-copy the file"
        ) from exc
    return headers


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False


def _pickled_key_error(path: Path, key: str) -> DataFormatError:
    return DataFormatError(
        f"{path}: key '{key}' holds a pickled object array, which this reader refuses to load for "
        f"safety (unpickling can run code); re-save it as a plain numeric array, e.g. "
        f"np.savez(out, {key}=np.asarray(data['{key}'], dtype=float))"
    )


class _NpzReader:
    """Loads single keys of an open NPZ, turning numpy/zip failures into DataFormatError."""

    def __init__(self, path: Path, npz: Any, headers: dict[str, tuple[tuple[int, ...], np.dtype]]):
        self.path = path
        self.npz = npz
        self.headers = headers
        self.keys = list(npz.files)

    def get(self, key: str) -> np.ndarray:
        header = self.headers.get(key)
        if header is not None and header[1].hasobject:
            raise _pickled_key_error(self.path, key)
        try:
            return np.asarray(self.npz[key])
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "pickled" in str(exc):
                raise _pickled_key_error(self.path, key) from exc
            raise self._unreadable(key, exc) from exc
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise self._unreadable(key, exc) from exc

    def _unreadable(self, key: str, exc: Exception) -> DataFormatError:
        return DataFormatError(
            f"{self.path} is not a readable NPZ file (key '{key}': {type(exc).__name__}: {exc}); "
            "the file is probably truncated or corrupt: re-export or re-copy it"
        )


def _read_metadata(reader: _NpzReader) -> dict[str, Any]:
    if "_metadata" not in reader.keys:
        return {}
    header = reader.headers.get("_metadata")
    if header is not None and header[1].hasobject:
        warnings.warn(
            f"{reader.path}: '_metadata' is a pickled object array; skipped without unpickling "
            "(re-save it as np.array(json.dumps(meta)) to keep it)",
            UserWarning,
            stacklevel=3,
        )
        return {}
    raw = reader.get("_metadata")
    if raw.dtype.kind not in "US" or raw.size != 1:
        warnings.warn(f"{reader.path}: '_metadata' is {describe_array(raw)}, not a JSON string; skipped",
                      UserWarning, stacklevel=3)
        return {}
    text = raw.reshape(()).item()
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        warnings.warn(f"{reader.path}: '_metadata' is not valid JSON ({exc}); skipped", UserWarning,
                      stacklevel=3)
        return {}
    if not isinstance(meta, dict):
        warnings.warn(f"{reader.path}: '_metadata' JSON is a {type(meta).__name__}, not an object; skipped",
                      UserWarning, stacklevel=3)
        return {}
    return meta


def _is_real_numeric(arr: np.ndarray) -> bool:
    kind = arr.dtype.kind
    return kind in "iuf"


def _coords(reader: _NpzReader, key: str) -> np.ndarray:
    arr = reader.get(key)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise DataFormatError(f"{reader.path}: '{key}' must be 1-D (M,), found {describe_array(arr)}; "
                              "store one coordinate per pattern")
    if not _is_real_numeric(arr):
        raise DataFormatError(f"{reader.path}: '{key}' must be real numbers (object pixels), found "
                              f"{describe_array(arr)}; store float64 coordinates")
    return arr.astype(np.float64, copy=False)


def _stack_layout(arr: np.ndarray, m: int, key: str, path: Path) -> np.ndarray:
    """Bring a pattern stack to ``[M, N, N]``: squeeze a trailing channel, transpose legacy ``[N, N, M]``."""
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == m and arr.shape[0] != m and arr.shape[1] != m:
        logger.info("%s: '%s' has legacy layout %s (N, N, M); transposing to (M, N, N)", path, key, arr.shape)
        arr = np.ascontiguousarray(np.moveaxis(arr, 2, 0))
    return arr


def _probe_layout(probe: np.ndarray, path: Path) -> np.ndarray:
    """Bring a probe to ``[N, N]`` from modes-first ``(1, N, N)``, ``(1, 1, N, N)`` or ``(N, N, 1)``."""
    if probe.ndim == 4 and probe.shape[0] == 1:
        probe = probe[0]
    if probe.ndim == 3:
        if probe.shape[1] == probe.shape[2] and probe.shape[0] != probe.shape[1]:
            if probe.shape[0] != 1:
                raise DataFormatError(
                    f"{path}: 'probeGuess' has {probe.shape[0]} incoherent modes {probe.shape}; multiple "
                    "probe modes are not supported: store mode 0 only, e.g. probeGuess=probe[0]"
                )
            probe = probe[0]
        elif probe.shape[0] == probe.shape[1] and probe.shape[2] == 1:
            probe = probe[..., 0]
    if probe.ndim != 2:
        raise DataFormatError(f"{path}: 'probeGuess' must be (N, N) complex, found {describe_array(probe)}; "
                              "store a single 2-D probe")
    return probe


def _object_layout(obj: np.ndarray, path: Path) -> np.ndarray:
    if obj.ndim == 3 and obj.shape[0] == 1:
        obj = obj[0]
    elif obj.ndim == 3 and obj.shape[2] == 1:
        obj = obj[..., 0]
    if obj.ndim != 2:
        raise DataFormatError(f"{path}: 'objectGuess' must be (H, W) complex, found {describe_array(obj)}; "
                              "store a single 2-D object layer")
    return obj


def _diffraction_key(reader: _NpzReader) -> str:
    has_new, has_old = "diffraction" in reader.keys, "diff3d" in reader.keys
    if has_new and has_old:
        new_shape = reader.headers.get("diffraction", ((), None))[0]
        old_shape = reader.headers.get("diff3d", ((), None))[0]
        if new_shape != old_shape:
            raise DataFormatError(
                f"{reader.path}: both 'diffraction' {new_shape} and 'diff3d' {old_shape} exist with "
                "different shapes; keep only one of them"
            )
        logger.info("%s: both 'diffraction' and 'diff3d' present; using 'diffraction'", reader.path)
    return "diffraction" if has_new else "diff3d"


def load_npz(path: str | os.PathLike[str], units: str = "auto") -> ScanData:
    """Read a scan NPZ (the PtychoPINN contract, ptychodus exports, legacy layouts) into a ScanData.

    Args:
        path: the ``.npz`` file.
        units: units of the stored patterns: ``'amplitude'``, ``'intensity'`` (counts; square root
            taken) or ``'auto'``. With ``'auto'``, a ``_metadata['diffraction_units']`` entry is trusted
            if present, else the rule of :mod:`ptychopinn.io.units` decides.

    Returns:
        A validated :class:`ScanData` holding float32 amplitude ``[M, N, N]``, positions ``[M, 2]``
        float64 in object pixels, probe ``[N, N]`` complex64 and the optional fields found.
        ``metadata`` holds the file's ``_metadata`` plus ``input_units`` (and ``units_detected``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: bad ``units``.
        DataFormatError: not a readable NPZ, pickled arrays, missing keys, bad shapes or values.
    """
    path = Path(path)
    if units not in UNITS_CHOICES:
        raise ConfigError(f"units must be one of {', '.join(UNITS_CHOICES)}, got {units!r}; "
                          "pass 'amplitude', 'intensity' or 'auto'")
    if not path.exists():
        raise FileNotFoundError(f"NPZ file not found: {path}")
    if path.is_dir():
        raise DataFormatError(f"{path} is a directory, expected an .npz file; pass the file path")
    headers = _array_headers(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataFormatError(f"{path} is not a readable NPZ file ({type(exc).__name__}: {exc}); "
                              "expected a zip archive written by numpy.savez") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):  # defensive: the zip check above should catch this
        raise DataFormatError(f"{path} is not an NPZ archive (found {describe_array(npz)}); "
                              "save the scan with numpy.savez and named keys")
    with npz:
        reader = _NpzReader(path, npz, headers)
        missing = [k for k in REQUIRED_KEYS if not any(alt in reader.keys for alt in k.split("|"))]
        if missing:
            raise DataFormatError(
                f"{path}: missing required keys {missing}; found keys {sorted(reader.keys)}; required: "
                f"{list(REQUIRED_KEYS)} ('a|b' = either name)"
            )
        try:
            return _scan_from_reader(reader, units)
        except DataFormatError as exc:
            if str(exc).startswith(str(path)):
                raise
            # errors from ScanData / the units conversion: say which file they concern
            raise DataFormatError(f"{path}: {exc}") from exc


def _scan_from_reader(reader: _NpzReader, units: str) -> ScanData:
    path = reader.path
    metadata = _read_metadata(reader)
    x, y = _coords(reader, "xcoords"), _coords(reader, "ycoords")
    if x.shape != y.shape:
        raise DataFormatError(f"{path}: xcoords has {x.size} entries but ycoords has {y.size}; "
                              "store one (x, y) pair per pattern")
    m = x.size

    diff_key = _diffraction_key(reader)
    diff = _stack_layout(reader.get(diff_key), m, diff_key, path)
    if diff.ndim != 3:
        raise DataFormatError(f"{path}: '{diff_key}' must be (M, N, N), found {describe_array(diff)}; "
                              "stack the patterns along the first axis")
    if diff.shape[0] != m:
        raise DataFormatError(f"{path}: '{diff_key}' has {diff.shape[0]} patterns but xcoords/ycoords have "
                              f"{m} positions; store exactly one position per pattern")

    if units == "auto" and metadata.get(UNITS_METADATA_KEY) in ("amplitude", "intensity"):
        units_used = str(metadata[UNITS_METADATA_KEY])
        logger.info("%s: diffraction units %s taken from _metadata", path, units_used)
        amplitude, _ = to_amplitude(diff, units_used)
        metadata["units_detected"] = units_used
    else:
        amplitude, units_used = to_amplitude(diff, units)
        if units == "auto":
            metadata["units_detected"] = units_used
        else:
            metadata.pop("units_detected", None)
    # the file's own units note describes the file; the scan now holds amplitude and records the input units
    metadata.pop(UNITS_METADATA_KEY, None)
    metadata["input_units"] = units_used
    del diff

    positions_start = None
    has_xs, has_ys = "xcoords_start" in reader.keys, "ycoords_start" in reader.keys
    if has_xs != has_ys:
        raise DataFormatError(f"{path}: only one of xcoords_start/ycoords_start is present; "
                              "store both nominal coordinates or neither")
    if has_xs:
        xs, ys = _coords(reader, "xcoords_start"), _coords(reader, "ycoords_start")
        if xs.size != m or ys.size != m:
            raise DataFormatError(f"{path}: xcoords_start/ycoords_start have {xs.size}/{ys.size} entries but "
                                  f"there are {m} patterns; store one nominal position per pattern")
        positions_start = np.stack([xs, ys], axis=1)

    scan_index = reader.get("scan_index").reshape(-1) if "scan_index" in reader.keys else None
    obj = _object_layout(reader.get("objectGuess"), path) if "objectGuess" in reader.keys else None
    patches = None
    if "Y" in reader.keys:
        patches = _stack_layout(reader.get("Y"), m, "Y", path)
        if not np.iscomplexobj(patches):
            raise DataFormatError(
                f"{path}: 'Y' (ground-truth patches) must be complex, found {describe_array(patches)}; "
                "a real array has lost the phase: regenerate Y as complex64 or drop the key"
            )

    return ScanData(
        diffraction=amplitude,
        positions=np.stack([x, y], axis=1),
        probe=_probe_layout(reader.get("probeGuess"), path),
        obj=obj,
        positions_start=positions_start,
        scan_index=scan_index,
        patches=patches,
        metadata=metadata,
    )


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
    unicode array holding JSON, readable without pickle).
    """
    path = Path(path)
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
    arrays["_metadata"] = np.array(json.dumps(meta))

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # writing through a file object keeps numpy from appending '.npz' to the name
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; a data file should be readable like any other
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if exc.filename is None:
            # name the destination so a full disk or unwritable folder is reported with its path
            raise type(exc)(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------- inspection
def describe_npz(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise an NPZ for humans (the ``info`` command) without raising for bad files.

    Returns:
        A JSON-serialisable dict: ``path``; ``keys`` mapping each member to ``{'shape', 'dtype'}``
        (read from headers, nothing unpickled); when the file is a valid scan also ``n_points``,
        ``N``, ``object_shape``, ``input_units`` and ``metadata``; ``errors``, a list of one-line
        problems (empty when the file loads as a valid scan); and ``valid`` (bool).
    """
    p = Path(path)
    info: dict[str, Any] = {"path": str(p), "keys": {}, "errors": [], "valid": False}
    if not p.exists():
        info["errors"].append(f"NPZ file not found: {p}")
        return info
    try:
        headers = _array_headers(p)
    except DataFormatError as exc:
        info["errors"].append(str(exc))
        return info
    info["keys"] = {
        k: {"shape": list(shape), "dtype": str(dtype)} for k, (shape, dtype) in sorted(headers.items())
    }
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scan = load_npz(p, units="auto")
    except (PtychoInputError, OSError) as exc:
        info["errors"].append(str(exc))
        return info
    info["warnings"] = [str(w.message) for w in caught]
    info.update(
        valid=True,
        n_points=scan.n_points,
        N=scan.N,
        object_shape=None if scan.obj is None else list(scan.obj.shape),
        input_units=scan.metadata.get("input_units"),
        metadata=scan.metadata,
    )
    return info
