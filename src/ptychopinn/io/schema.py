"""The one mapping from the scan keys (the PtychoPINN NPZ contract, also used as HDF5 dataset names) to a
validated :class:`~ptychopinn.data.ScanData`, shared by every container format.

Keys (M = scan points, N = pattern size):

==================  =============  =====================================================
key                 shape          meaning
==================  =============  =====================================================
``diffraction``     [M, N, N]      patterns (amplitude or counts, see ``units``)
or ``diff3d``                      legacy name; if both exist ``diffraction`` is used
``probeGuess``      [N, N]         complex probe (optional here: see ``probe=``)
``xcoords``         [M]            x (column) of each probe centre, object pixels
``ycoords``         [M]            y (row), object pixels
``xcoords_start``   [M]            optional nominal x (both ``_start`` keys or neither)
``ycoords_start``   [M]            optional nominal y
``scan_index``      [M]            optional integer scan numbers
``objectGuess``     [H, W]         optional complex ground-truth object
``Y``               [M, N, N]      optional complex ground-truth patches
``valid_pixels``    [N, N]         optional detector mask, nonzero = measured pixel (masked pixels are
                                   set to 0 and left out of every likelihood)
``_metadata``       0-d str        optional JSON provenance
==================  =============  =====================================================

Layouts tolerated: a trailing channel axis ``[M, N, N, 1]`` (diffraction, ``Y``), the legacy
``[N, N, M]`` stacking (transposed in memory), probes stored ``(1, N, N)``, ``(1, 1, N, N)`` or
``(N, N, 1)``. Other keys are never read.

A container format supplies an :class:`ArraySource` (names, declared shapes and dtypes, whole reads of
small arrays, batch reads of stacks and, where the bytes lie uncompressed in the file, a read-only memory
map). Sizes are checked against :func:`ptychopinn.limits.memory_limit` before anything is allocated;
diffraction is converted to float32 amplitude batch by batch, and a stack above
:func:`ptychopinn.io.files.mmap_threshold` bytes is kept on disk (mapped in place, or decoded into a
temporary file).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ptychopinn.data.scan import PHYSICAL_FIELDS, ScanData
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.io.files import check_allocation, mmap_threshold
from ptychopinn.io.frames import CroppedSource, FrameOptions, crop_window, mirrored_positions
from ptychopinn.io.metadata import parse_metadata
from ptychopinn.io.units import UNITS_CHOICES, detect_units, to_amplitude

logger = logging.getLogger(__name__)

REQUIRED_KEYS: tuple[str, ...] = ("diffraction|diff3d", "probeGuess", "xcoords", "ycoords")
"""Keys every scan file must hold (``a|b`` means either name), unless a probe is given separately."""

UNITS_METADATA_KEY = "diffraction_units"
"""``_metadata`` entry that states the units of the stored patterns."""

BATCH_BYTES = 64 << 20
"""Target size of one batch of raw patterns read at a time (64 MiB)."""


class ArraySource(Protocol):
    """Read access to the named arrays of one file."""

    path: Path

    def keys(self) -> set[str]:
        """Names of the arrays present."""

    def shape(self, key: str) -> tuple[int, ...]:
        """Declared shape of ``key`` (no data read)."""

    def dtype(self, key: str) -> np.dtype:
        """Declared dtype of ``key``."""

    def read(self, key: str) -> np.ndarray:
        """The whole array (callers check its size first)."""

    def batches(self, key: str, rows: int) -> Iterator[np.ndarray]:
        """Consecutive blocks of at most ``rows`` entries along axis 0 of a C-ordered stack, in order."""

    def mapped(self, key: str, strict: bool) -> np.ndarray | None:
        """A read-only ``np.memmap`` of ``key`` when its bytes lie uncompressed in the file; else None, or
        with ``strict`` a DataFormatError that says why it cannot be mapped."""

    def metadata_text(self) -> str | None:
        """The ``_metadata`` JSON text, or None."""


def check_units(units: str) -> None:
    if units not in UNITS_CHOICES:
        raise ConfigError(f"units must be one of {', '.join(UNITS_CHOICES)}, got {units!r}; "
                          "pass 'amplitude', 'intensity' or 'auto'")


def is_real_numeric(dtype: np.dtype) -> bool:
    """Integer or floating dtype (bool, complex, timedelta, datetime, str, object, void are not)."""
    return dtype.kind in "iuf"


def read_small(src: ArraySource, key: str) -> np.ndarray:
    """Whole array ``key`` after checking its declared size against the memory limit."""
    check_allocation(src.path, f"'{key}'", src.shape(key), src.dtype(key).itemsize)
    return np.asarray(src.read(key))


def _coords(src: ArraySource, key: str) -> np.ndarray:
    dtype = src.dtype(key)
    if not is_real_numeric(dtype):
        raise DataFormatError(f"{src.path}: '{key}' must be real numbers (object pixels), found "
                              f"shape={src.shape(key)} dtype={dtype}; store float64 coordinates")
    arr = read_small(src, key)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise DataFormatError(f"{src.path}: '{key}' must be 1-D (M,), found {describe_array(arr)}; "
                              "store one coordinate per pattern")
    return arr.astype(np.float64, copy=False)


def probe_layout(probe: np.ndarray, path: Path | str, key: str = "probeGuess") -> np.ndarray:
    """Bring a probe to ``[N, N]`` from modes-first ``(1, N, N)``, ``(1, 1, N, N)`` or ``(N, N, 1)``."""
    if probe.ndim == 4 and probe.shape[0] == 1:
        probe = probe[0]
    if probe.ndim == 3:
        if probe.shape[1] == probe.shape[2] and probe.shape[0] != probe.shape[1]:
            if probe.shape[0] != 1:
                raise DataFormatError(
                    f"{path}: '{key}' has {probe.shape[0]} incoherent modes {probe.shape}; multiple "
                    f"probe modes are not supported: store mode 0 only, e.g. {key}=probe[0]"
                )
            probe = probe[0]
        elif probe.shape[0] == probe.shape[1] and probe.shape[2] == 1:
            probe = probe[..., 0]
    return _single_complex_2d(probe, path, key, "(N, N)", "a single 2-D probe", "the complex probe field")


def object_layout(obj: np.ndarray, path: Path | str, key: str = "objectGuess") -> np.ndarray:
    """Bring an object to ``[H, W]`` from ``(1, H, W)`` or ``(H, W, 1)``."""
    if obj.ndim == 3 and obj.shape[0] == 1:
        obj = obj[0]
    elif obj.ndim == 3 and obj.shape[2] == 1:
        obj = obj[..., 0]
    return _single_complex_2d(obj, path, key, "(H, W)", "a single 2-D object layer",
                              "the complex object transmission")


def _single_complex_2d(arr: np.ndarray, path: Path | str, key: str, shape: str, single: str, field: str) -> np.ndarray:
    """``arr`` if it is 2-D and numeric (real or complex), else a one-line :class:`DataFormatError`."""
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: '{key}' must be {shape} complex, found {describe_array(arr)}; store {single}")
    if arr.dtype.kind not in "iufc":
        raise DataFormatError(f"{path}: '{key}' must be a complex array, found {describe_array(arr)}; store {field}")
    return arr


def diffraction_key(src: ArraySource) -> str:
    keys = src.keys()
    has_new, has_old = "diffraction" in keys, "diff3d" in keys
    if has_new and has_old:
        if src.shape("diffraction") != src.shape("diff3d"):
            raise DataFormatError(
                f"{src.path}: both 'diffraction' {src.shape('diffraction')} and 'diff3d' {src.shape('diff3d')} "
                "exist with different shapes; keep only one of them"
            )
        logger.info("%s: both 'diffraction' and 'diff3d' present; using 'diffraction'", src.path)
    return "diffraction" if has_new else "diff3d"


def _rows_per_batch(shape: tuple[int, ...], itemsize: int) -> int:
    per_row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    return max(1, BATCH_BYTES // per_row)


def stack_shape(src: ArraySource, key: str, m: int) -> tuple[tuple[int, ...], bool]:
    """``([M, N, N] shape, legacy)`` of a pattern stack from its declared shape; legacy = ``[N, N, M]``."""
    shape = tuple(src.shape(key))
    if len(shape) == 4 and shape[-1] == 1:
        shape = shape[:3]
    if len(shape) == 3 and shape[2] == m and shape[0] != m and shape[1] != m:
        return (shape[2], shape[0], shape[1]), True
    if len(shape) != 3:
        raise DataFormatError(f"{src.path}: '{key}' must be (M, N, N), found shape={tuple(src.shape(key))} "
                              f"dtype={src.dtype(key)}; stack the patterns along the first axis")
    if shape[0] != m:
        raise DataFormatError(f"{src.path}: '{key}' has {shape[0]} patterns but xcoords/ycoords have "
                              f"{m} positions; store exactly one position per pattern")
    return shape, False


def _spill_file(path: Path, shape: tuple[int, ...]) -> tuple[np.memmap, Any]:
    """A writable float32 memmap of ``shape`` on an unlinked temporary file in ``$TMPDIR`` (and the file)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    tmpdir = tempfile.gettempdir()
    free = shutil.disk_usage(tmpdir).free
    if nbytes > free:
        raise DataFormatError(
            f"{path}: decoding the diffraction stack needs {nbytes} bytes of temporary disk space but {tmpdir} has "
            f"{free} free; set TMPDIR to a larger disk, or store the stack uncompressed as float32 amplitude so it "
            "can be memory-mapped in place"
        )
    fh = tempfile.TemporaryFile(prefix="ptychopinn-stack-", dir=tmpdir)
    fh.truncate(max(nbytes, 1))
    return np.memmap(fh, dtype=np.float32, mode="r+", shape=shape), fh


def _units_before_reading(units: str, stated: Any, dtype: np.dtype, path: Path) -> str | None:
    """Units known without looking at values (explicit, stated in _metadata, integer counts), else None."""
    if units != "auto":
        logger.info("%s: diffraction units given as %s", path, units)
        return units
    if stated in ("amplitude", "intensity"):
        logger.info("%s: diffraction units %s, as the file states", path, stated)
        return str(stated)
    if dtype.kind in "iu":
        logger.info("%s: diffraction units detected as intensity: integer dtype %s means photon counts", path, dtype)
        return "intensity"
    return None


def _check_stack_dtype(src: ArraySource, key: str) -> np.dtype:
    dtype = src.dtype(key)
    if dtype.kind == "c":
        raise DataFormatError(
            f"{src.path}: diffraction patterns must be real (amplitude or intensity), found complex data "
            f"(shape={src.shape(key)} dtype={dtype}); store |F| (amplitude) or |F|^2 (counts), not the complex field"
        )
    if not is_real_numeric(dtype):
        raise DataFormatError(f"{src.path}: '{key}' must be a numeric (integer or float) array, found "
                              f"shape={src.shape(key)} dtype={dtype}; convert the patterns to float32 amplitudes "
                              "or integer counts")
    return dtype


def required_map(src: ArraySource, key: str, m: int, units: str, metadata: dict[str, Any]) -> np.ndarray:
    """The stack ``key`` memory-mapped in place, or DataFormatError saying why it cannot be.

    Mapping needs float32 amplitude in ``[M, N, N]`` (or ``[M, N, N, 1]``) layout stored uncompressed;
    anything that would need a full-size conversion is refused with the re-save recipe.
    """
    if units not in ("amplitude", "auto"):
        raise ConfigError(f"units must be one of amplitude, auto for a memory-mapped scan, got {units!r}; convert "
                          "counts to amplitude once (load_scan(..., units='intensity') then save_npz) so the "
                          "stack can be mapped")
    dtype = _check_stack_dtype(src, key)
    shape, legacy = stack_shape(src, key, m)
    if legacy:
        raise DataFormatError(f"{src.path}: '{key}' must be ({m}, N, N) amplitude to be memory-mapped, found the "
                              f"legacy [N, N, M] layout {src.shape(key)}: re-save it as [M, N, N], e.g. "
                              "np.moveaxis(a, 2, 0)")
    stated = metadata.pop(UNITS_METADATA_KEY, None)
    if dtype != np.float32 or stated == "intensity":
        found = "intensity (per _metadata)" if stated == "intensity" else f"dtype {dtype}"
        raise DataFormatError(
            f"{src.path}: '{key}' must be float32 amplitude sqrt(counts) to be memory-mapped, found {found}; "
            "convert once with load_scan(...) + save_npz(...) (writes float32 amplitude), or load it into memory"
        )
    mapped = src.mapped(key, strict=True)
    assert mapped is not None
    _note_units(metadata, units, "amplitude")
    return mapped.reshape(shape)


def amplitude_stack(src: ArraySource, key: str, m: int, units: str, metadata: dict[str, Any], *,
                    allow_map: bool = True, threshold: int | None = None,
                    valid: np.ndarray | None = None) -> np.ndarray:
    """The pattern stack ``key`` as ``[M, N, N]`` float32 amplitude, with ``metadata`` units notes updated.

    Units: an explicit ``units`` wins; with ``'auto'`` a ``_metadata['diffraction_units']`` entry is
    trusted, an integer dtype means counts, else the rule of :mod:`ptychopinn.io.units` decides (on the
    first batch when the stack is larger than the mmap threshold, on all of it otherwise). With a detector
    mask ``valid`` (``[N, N]`` bool, True = measured) masked pixels are set to 0 as the stack is decoded, so
    hot or saturated values neither sway the units rule nor look like data (a stack mapped in place keeps
    its stored values; every likelihood ignores masked pixels).

    Storage of the result: a stack above :func:`ptychopinn.io.files.mmap_threshold` bytes stays on disk,
    memory-mapped in place when it is float32 amplitude stored uncompressed (and ``allow_map``), else
    decoded batch by batch into a temporary file; a smaller stack is decoded into memory.
    """
    dtype = _check_stack_dtype(src, key)
    shape, legacy = stack_shape(src, key, m)
    resolved = _units_before_reading(units, metadata.pop(UNITS_METADATA_KEY, None), dtype, src.path)
    big = int(np.prod(shape, dtype=np.int64)) * 4 > (mmap_threshold() if threshold is None else threshold)

    if big and allow_map and not legacy and dtype == np.float32 and resolved in ("amplitude", None):
        mapped = src.mapped(key, strict=False)
        if mapped is not None:
            mapped = mapped.reshape(shape)
            if resolved is None:
                k = min(m, 256)
                resolved, reason = detect_units(_masked(np.asarray(mapped[:k]), valid))
                logger.info("diffraction units detected as %s (first %d patterns): %s", resolved, k, reason)
            if resolved == "amplitude":
                _note_units(metadata, units, "amplitude")
                return mapped

    if legacy:
        check_allocation(src.path, f"'{key}'", src.shape(key), max(dtype.itemsize, 4) * 2)
        logger.info("%s: '%s' has legacy layout %s (N, N, M); transposing to (M, N, N)", src.path, key, src.shape(key))
        raw = np.ascontiguousarray(np.moveaxis(np.asarray(src.read(key)).reshape(src.shape(key)[:3]), 2, 0))
        amplitude, used = to_amplitude(raw, resolved or "auto", log=resolved is None)
        _note_units(metadata, units, used)
        return amplitude

    if not big:
        check_allocation(src.path, f"'{key}' (as float32 amplitude)", shape, 4 + dtype.itemsize)
        if resolved is None:  # the rule looks at every value, as for any array in memory
            raw = _masked(np.asarray(src.read(key)).reshape(shape), valid)
            amplitude, resolved = to_amplitude(raw, "auto")
            _note_units(metadata, units, resolved)
            return amplitude
    rows = _rows_per_batch(shape, max(dtype.itemsize, 8))
    fh = None
    out: np.ndarray
    if big:
        out, fh = _spill_file(src.path, shape)
    else:
        out = np.empty(shape, np.float32)
    lo = 0
    for batch in src.batches(key, rows):
        batch = _masked(np.asarray(batch).reshape((-1, *shape[1:])), valid)
        if resolved is None:
            resolved, reason = detect_units(batch)
            logger.info("diffraction units detected as %s (first %d patterns): %s", resolved, len(batch), reason)
        out[lo:lo + len(batch)], _ = to_amplitude(batch, resolved, log=False)
        lo += len(batch)
    if lo != shape[0]:
        raise DataFormatError(f"{src.path}: '{key}' yielded {lo} of {shape[0]} patterns; the file is truncated "
                              "or corrupt: re-export or re-copy it")
    _note_units(metadata, units, resolved or "amplitude")
    if fh is not None:
        assert isinstance(out, np.memmap)
        out.flush()
        out = np.memmap(fh, dtype=np.float32, mode="r", shape=shape)  # read-only: pages can be dropped again
        fh.close()  # the mapping keeps the unlinked file alive until the scan is released
    return out


def _masked(patterns: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """``patterns`` ``[b, N, N]`` with masked pixels (``~valid``) set to 0 (a copy when it must be writable)."""
    if valid is None or valid.all():
        return patterns
    out = patterns if patterns.flags.writeable and patterns.flags.owndata else np.array(patterns, copy=True)
    out[:, ~valid] = 0
    return out


def _note_units(metadata: dict[str, Any], units: str, used: str) -> None:
    metadata["input_units"] = used
    if units == "auto":
        metadata["units_detected"] = used
    else:
        metadata.pop("units_detected", None)


def scan_from_source(src: ArraySource, units: str = "auto", *, probe: np.ndarray | str | None = None,
                     mapping: str = "auto", threshold: int | None = None,
                     extra_metadata: dict[str, Any] | None = None,
                     physical: dict[str, float | None] | None = None,
                     valid_pixels: np.ndarray | None = None, frames: FrameOptions | None = None,
                     probe_modes: np.ndarray | None = None) -> ScanData:
    """Build the :class:`ScanData` of a source holding the scan keys.

    Args:
        src: the file's arrays.
        units: ``'amplitude'``, ``'intensity'`` or ``'auto'``.
        probe: ``[N, N]`` complex probe to use instead of the file's ``probeGuess``, or ``'estimate'`` for
            :func:`ptychopinn.io.probe.estimate_probe` of the patterns (one of them is required when the file
            has no ``probeGuess``).
        mapping: ``'auto'`` keeps large stacks on disk (see :func:`amplitude_stack`), ``'never'`` reads them
            into memory or a temporary file, ``'require'`` memory-maps the stack (and complex64 ``Y``) in
            place or raises DataFormatError saying why it cannot.
        threshold: bytes above which the stack stays on disk (default ``$PTYCHOPINN_MMAP_THRESHOLD`` or 1 GiB).
        extra_metadata: merged into the scan's metadata.
        physical: optional ``pixel_size_m``, ``energy_ev``, ``distance_m`` for the scan.
        valid_pixels: optional ``[ny, nx]`` detector mask (True = measured) of the frames as stored, from the
            container (e.g. a CXI mask); otherwise the ``valid_pixels`` key is used when present.
        frames: crop window, zero order and mirrored axes (:mod:`ptychopinn.io.frames`); None = as stored.
            Positions and ``physical['pixel_size_m']`` are those of the frames as stored.
        probe_modes: ``[K, N, N]`` complex incoherent modes of the file's probe (mode 0 its ``probeGuess``), kept
            as ``ScanData.probe_modes`` (resampled like the probe for a crop) when the file's probe is used.

    Raises:
        DataFormatError: missing keys, bad shapes, dtypes or values (the message starts with the path).
    """
    path = src.path
    check_units(units)
    keys = src.keys()
    required = tuple(k for k in REQUIRED_KEYS if probe is None or k != "probeGuess")
    missing = [k for k in required if not any(alt in keys for alt in k.split("|"))]
    if missing:
        hint = "; a scan without a probe needs --probe FILE or --probe estimate" if "probeGuess" in missing else ""
        raise DataFormatError(f"{path}: missing required keys {missing}; found keys {sorted(keys)}; "
                              f"required: {list(required)} ('a|b' = either name){hint}")
    try:
        return _build(src, units, probe, mapping, threshold, extra_metadata or {}, physical or {}, valid_pixels,
                      frames or FrameOptions(), probe_modes)
    except DataFormatError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise DataFormatError(f"{path}: {exc}") from exc


def _build(src: ArraySource, units: str, probe: np.ndarray | str | None, mapping: str, threshold: int | None,
           extra: dict[str, Any], physical: dict[str, float | None], valid: np.ndarray | None,
           frames: FrameOptions, modes: np.ndarray | None = None) -> ScanData:
    path, keys = src.path, src.keys()
    metadata = parse_metadata(src.metadata_text(), path)
    metadata.update(extra)
    # physical quantities written into _metadata by our writers become ScanData fields (validated there)
    physical = {**{k: metadata.pop(k) for k in PHYSICAL_FIELDS if k in metadata},
                **{k: v for k, v in physical.items() if v is not None}}
    x, y = _coords(src, "xcoords"), _coords(src, "ycoords")
    if x.shape != y.shape:
        raise DataFormatError(f"{path}: xcoords has {x.size} entries but ycoords has {y.size}; "
                              "store one (x, y) pair per pattern")
    m = x.size
    has_xs, has_ys = "xcoords_start" in keys, "ycoords_start" in keys
    if has_xs != has_ys:
        raise DataFormatError(f"{path}: only one of xcoords_start/ycoords_start is present; "
                              "store both nominal coordinates or neither")
    positions_start = None
    if has_xs:
        xs, ys = _coords(src, "xcoords_start"), _coords(src, "ycoords_start")
        if xs.size != m or ys.size != m:
            raise DataFormatError(f"{path}: xcoords_start/ycoords_start have {xs.size}/{ys.size} entries but "
                                  f"there are {m} patterns; store one nominal position per pattern")
        positions_start = np.stack([xs, ys], axis=1)

    if valid is None and "valid_pixels" in keys:
        valid = read_small(src, "valid_pixels")
        if valid.dtype.kind not in "biu":
            raise DataFormatError(f"{path}: 'valid_pixels' must be a boolean or integer [N, N] mask, found "
                                  f"shape={valid.shape} dtype={valid.dtype}")
        valid = valid != 0
    key = diffraction_key(src)
    stack, legacy = stack_shape(src, key, m)
    frame_shape = stack[1:]
    if valid is not None:
        valid = np.asarray(valid, bool)
        if valid.shape != frame_shape:
            raise DataFormatError(f"{path}: the detector mask is {valid.shape} but the patterns are "
                                  f"{frame_shape[0]} x {frame_shape[1]}; store one flag per detector pixel")
    window = None
    if frames.crop is None and frame_shape[0] != frame_shape[1]:
        raise DataFormatError(f"{path}: the frames are {frame_shape[0]} x {frame_shape[1]}, not square; expected N x N "
                              "patterns: pass --crop N (crop=N) to cut a square window around the zero order")
    if frames.crop is not None:
        if legacy:
            raise DataFormatError(f"{path}: '{key}' has the legacy [N, N, M] layout {src.shape(key)}, which cannot "
                                  "be cropped while it is read; re-save it as [M, N, N] (np.moveaxis(a, 2, 0))")
        window = crop_window(src, key, frames, valid)
        src = CroppedSource(src, key, window)
        valid = None if valid is None else np.ascontiguousarray(window.cut(valid))
    if mapping == "require":
        diff = required_map(src, key, m, units, metadata)
    else:
        diff = amplitude_stack(src, key, m, units, metadata, allow_map=mapping == "auto", threshold=threshold,
                               valid=valid)

    from ptychopinn.io.probe import scan_probe

    probe, modes = scan_probe(probe, diff, lambda: probe_layout(read_small(src, "probeGuess"), path), metadata,
                              window=window, modes=modes, path=path)
    scan_index = read_small(src, "scan_index").reshape(-1) if "scan_index" in keys else None
    positions = np.stack([x, y], axis=1)
    if window is not None:
        scale = np.asarray(window.scale_xy)
        positions = positions * scale
        positions_start = None if positions_start is None else positions_start * scale
        pixel = physical.get("pixel_size_m")
        if pixel is not None:
            physical["pixel_size_m"] = float(pixel) / float(scale[0])
        dropped = [k for k in ("objectGuess", "Y") if k in keys]
        if dropped:
            logger.info("%s: %s left out: the ground truth lives on the pixel grid of the uncropped frames", path,
                        " and ".join(dropped))
        keys = keys - {"objectGuess", "Y"}
        metadata["frames"] = window.metadata()
    if frames.flip_x or frames.flip_y:
        positions, positions_start = mirrored_positions(positions, positions_start, frames)
        metadata.setdefault("frames", {}).update(flip_x=frames.flip_x, flip_y=frames.flip_y)
    obj = object_layout(read_small(src, "objectGuess"), path) if "objectGuess" in keys else None
    patches = None
    if "Y" in keys:
        if src.dtype("Y").kind != "c":
            raise DataFormatError(
                f"{path}: 'Y' (ground-truth patches) must be complex, found shape={src.shape('Y')} dtype="
                f"{src.dtype('Y')}; a real array has lost the phase: regenerate Y as complex64 or drop the key"
            )
        y_shape, y_legacy = stack_shape(src, "Y", m)
        mapped = (src.mapped("Y", strict=False) if mapping == "require" and src.dtype("Y") == np.complex64
                  and not y_legacy else None)
        if mapped is not None:
            patches = mapped.reshape(y_shape)
        else:
            patches = read_small(src, "Y")
            patches = patches.reshape(src.shape("Y")[:3])
            if y_legacy:
                patches = np.ascontiguousarray(np.moveaxis(patches, 2, 0))
    return ScanData(diffraction=diff, positions=positions, probe=probe, obj=obj,
                    positions_start=positions_start, scan_index=scan_index, patches=patches, metadata=metadata,
                    valid_pixels=valid, probe_modes=modes, **physical)
