"""`ScanData`: one ptychographic scan as validated numpy arrays.

Conventions (shared by every module that consumes a scan):

* ``diffraction`` is far-field **amplitude** ``sqrt(counts)``, zero frequency at pixel
  ``(N/2, N/2)``; never intensity. Use :meth:`ScanData.from_arrays` with ``units=`` to convert counts.
* ``positions`` are in object pixels, ordered ``(x, y)`` with ``x`` = column and ``y`` = row. A
  position is the object point that lies under patch pixel ``(N//2, N//2)`` (the probe centre).

Construction casts dtypes (float64 amplitudes to float32, complex128 to complex64, float32 or
integer positions to float64) and checks every field; a violation raises
:class:`~ptychopinn.errors.DataFormatError` whose one-line message names the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ptychopinn.errors import DataFormatError, PtychoInputError, describe_array
from ptychopinn.io.units import to_amplitude

MIN_N = 8
"""Smallest accepted pattern size N (pixels)."""


def _fail(name: str, expected: str, found: str, fix: str) -> DataFormatError:
    return DataFormatError(f"{name}: expected {expected}, found {found}; {fix}")


def _check_finite(name: str, a: np.ndarray) -> None:
    """All values finite; checked in chunks along axis 0 so temporaries stay small for big stacks."""
    if a.ndim == 0:
        a = a.reshape(1)
    region = _mapped_region(a)
    n_bad, first = 0, None
    for lo in range(0, a.shape[0], VALIDATION_CHUNK):
        chunk = a[lo:lo + VALIDATION_CHUNK]
        bad = ~np.isfinite(chunk)
        k = int(np.count_nonzero(bad))
        if k:
            if first is None:
                idx = np.argwhere(bad)[0]
                first = (int(idx[0]) + lo, *(int(i) for i in idx[1:]))
            n_bad += k
        drop_mapped_pages(chunk, region)
    if n_bad:
        raise _fail(name, "finite values", f"{n_bad} NaN/Inf values (first at index {first})",
                    "remove or repair those entries before building the scan")


VALIDATION_CHUNK = 256
"""Patterns checked at a time by the diffraction value checks (bounded temporaries for memmaps)."""


def _mapped_region(arr: np.ndarray) -> tuple[Any, int] | None:
    """(mmap object, address of its first byte) when ``arr`` views a read-only ``np.memmap``, else None."""
    base: Any = arr
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    mm = getattr(base, "_mmap", None)
    if base is None or mm is None or getattr(base, "mode", None) != "r" or not hasattr(mm, "madvise"):
        return None
    import mmap as _mmap_mod

    array_offset = int(base.offset) % _mmap_mod.ALLOCATIONGRANULARITY
    return mm, int(base.__array_interface__["data"][0]) - array_offset


def drop_mapped_pages(chunk: np.ndarray, region: tuple[Any, int] | None) -> None:
    """Unmap the pages of ``chunk`` (a contiguous view of a read-only memmap) from this process.

    The data stay in the kernel page cache and are faulted back in when read again; this only keeps a
    sequential pass over a larger-than-memory file from accumulating file-backed resident memory.
    A no-op for ordinary arrays, writable maps or platforms without ``madvise``.
    """
    if region is None or not chunk.flags.c_contiguous or chunk.nbytes == 0:
        return
    import mmap as _mmap_mod

    mm, mm_addr = region
    page = _mmap_mod.PAGESIZE
    start = int(chunk.__array_interface__["data"][0]) - mm_addr
    aligned = start - start % page
    try:
        mm.madvise(_mmap_mod.MADV_DONTNEED, aligned, start + chunk.nbytes - aligned)
    except (AttributeError, OSError, ValueError):  # pragma: no cover - platform dependent
        pass


def _check_diffraction_values(diff: np.ndarray) -> None:
    """Finite, >= 0 and not all zero, checked ``VALIDATION_CHUNK`` patterns at a time.

    Temporaries are chunk-sized (never a full ``[M, N, N]`` boolean), and for a read-only memmap the pages
    of each checked chunk are released again, so validating a file larger than memory is possible.
    """
    region = _mapped_region(diff)
    m = diff.shape[0]
    n_bad = n_neg = 0
    first_bad: tuple[int, ...] | None = None
    first_neg: tuple[int, ...] | None = None
    any_signal = False
    for lo in range(0, m, VALIDATION_CHUNK):
        chunk = diff[lo:lo + VALIDATION_CHUNK]
        finite = np.isfinite(chunk)
        bad = chunk.size - int(np.count_nonzero(finite))
        if bad:
            if first_bad is None:
                idx = np.argwhere(~finite)[0]
                first_bad = (int(idx[0]) + lo, *(int(i) for i in idx[1:]))
            n_bad += bad
        del finite
        if not n_bad:  # with NaNs present the finite error is raised first anyway
            neg = chunk < 0
            k = int(np.count_nonzero(neg))
            if k:
                if first_neg is None:
                    idx = np.argwhere(neg)[0]
                    first_neg = (int(idx[0]) + lo, *(int(i) for i in idx[1:]))
                n_neg += k
            del neg
            if not any_signal:
                any_signal = bool(np.any(chunk))
        drop_mapped_pages(chunk, region)
    if n_bad:
        raise _fail("diffraction", "finite values", f"{n_bad} NaN/Inf values (first at index {first_bad})",
                    "remove or repair those entries before building the scan")
    if n_neg:
        raise _fail("diffraction", "amplitudes >= 0", f"{n_neg} negative values (first at index {first_neg})",
                    "amplitudes are sqrt(counts); clip background-subtracted data at 0")
    if not any_signal:
        raise _fail("diffraction", "some nonzero signal", "an all-zero scan",
                    "check the detector data and the units conversion")


def _is_numeric(dtype: np.dtype) -> bool:
    """True for integer and floating dtypes (bool, complex, str and object are not)."""
    return dtype != np.bool_ and (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))


def _as_real(name: str, a: Any, dtype: type[np.floating]) -> np.ndarray:
    arr = np.asarray(a)
    if np.iscomplexobj(arr):
        raise _fail(name, "a real array", f"complex data ({describe_array(arr)})",
                    "pass the real-valued quantity (e.g. np.abs for amplitudes)")
    if not _is_numeric(arr.dtype):
        raise _fail(name, "a numeric array", describe_array(arr), "convert it to float")
    return np.asarray(arr, dtype=dtype)


def _as_complex(name: str, a: Any, *, allow_real: bool) -> np.ndarray:
    arr = np.asarray(a)
    if not np.iscomplexobj(arr):
        if not (allow_real and _is_numeric(arr.dtype)):
            raise _fail(name, "a complex array", describe_array(arr),
                        "pass the complex field amplitude * exp(1j * phase), not amplitude or phase alone")
    return np.asarray(arr, dtype=np.complex64)


PHYSICAL_FIELDS: tuple[str, ...] = ("pixel_size_m", "energy_ev", "distance_m")
"""Optional physical metadata of a scan (object pixel size in m, photon energy in eV, detector distance in m)."""


def _physical_value(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _fail(name, "a positive number or None", repr(value),
                    "give the value in SI units (eV for energy)") from None
    if not (np.isfinite(v) and v > 0):
        raise _fail(name, "a positive finite number or None", repr(v), "give the value in SI units (eV for energy)")
    return v


def _check_m(name: str, m: int, found: int) -> None:
    if found != m:
        raise _fail(name, f"{m} scan points (one per diffraction pattern)", f"{found}",
                    "give one entry per pattern, in pattern order")


@dataclass(frozen=True, eq=False, repr=False)  # arrays: no elementwise __eq__/__hash__, no huge repr
class ScanData:
    """A ptychographic scan: amplitudes, positions, probe and optional ground truth.

    Attributes:
        diffraction: ``[M, N, N]`` float32, far-field amplitude sqrt(counts), DC at ``(N/2, N/2)``;
            N even and >= 8, all values finite and >= 0, not all zero.
        positions: ``[M, 2]`` float64, ``(x, y)`` = (column, row) in object pixels of the probe centre
            (the object point under patch pixel ``(N//2, N//2)``).
        probe: ``[N, N]`` complex64 probe on the object pixel grid (a real array is cast).
        obj: ``[H, W]`` complex64 ground-truth object, or None. When given, every position must lie
            in ``[0, W-1] x [0, H-1]``.
        positions_start: ``[M, 2]`` float64 nominal (pre-correction) positions in object pixels, or None.
        scan_index: ``[M]`` int64 scan number of each point, or None.
        patches: ``[M, N, N]`` complex64 ground-truth object patches (NPZ key ``Y``), or None; must be
            complex (a real array has lost its phase and is refused).
        metadata: JSON-serialisable provenance, e.g. ``{'nphotons': 1e6, 'input_units': 'intensity'}``.
        pixel_size_m: object pixel size in metres (the side of one square object pixel), or None when unknown.
        energy_ev: photon energy in eV, or None when unknown.
        distance_m: sample-detector distance in metres, or None when unknown.
        valid_pixels: ``[N, N]`` bool detector mask, True where a pixel is measured, or None (all are).
            Masked pixels (False) carry no information: readers store 0 there, and every likelihood
            (training loss, refinement) leaves them out instead of believing the 0.
        probe_modes: ``[K, N, N]`` complex64 incoherent probe modes of a partially coherent beam (K >= 2, the
            file's order, mode 0 the one ``probe`` holds), or None for a single mode. Refinement models each
            pattern as the sum of the modes' intensities (``RefineConfig.probe_modes``); the network uses
            ``probe``.
    """

    diffraction: np.ndarray
    positions: np.ndarray
    probe: np.ndarray
    obj: np.ndarray | None = None
    positions_start: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    patches: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    pixel_size_m: float | None = None
    energy_ev: float | None = None
    distance_m: float | None = None
    valid_pixels: np.ndarray | None = None
    probe_modes: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_arrays(
        cls,
        diffraction: np.ndarray,
        positions: np.ndarray,
        probe: np.ndarray,
        obj: np.ndarray | None = None,
        *,
        positions_start: np.ndarray | None = None,
        scan_index: np.ndarray | None = None,
        patches: np.ndarray | None = None,
        metadata: Mapping[str, Any] | None = None,
        units: str = "amplitude",
    ) -> ScanData:
        """Build a scan from patterns in amplitude or intensity units.

        Args:
            diffraction: ``[M, N, N]`` real patterns, amplitude or intensity (counts) per ``units``;
                integer counts (e.g. uint16) are fine.
            positions: ``[M, 2]`` ``(x, y)`` positions in object pixels.
            probe: ``[N, N]`` complex probe.
            obj: optional ``[H, W]`` complex ground-truth object.
            positions_start: optional ``[M, 2]`` nominal positions in object pixels.
            scan_index: optional ``[M]`` integer scan numbers.
            patches: optional ``[M, N, N]`` complex ground-truth patches.
            metadata: optional JSON-serialisable provenance (copied).
            units: ``'amplitude'``, ``'intensity'`` (square root taken) or ``'auto'`` (see
                :mod:`ptychopinn.io.units`).

        Returns:
            A validated scan holding amplitude; ``metadata['input_units']`` records the units the
            patterns were read as, and with ``units='auto'`` also ``metadata['units_detected']``.
        """
        amplitude, units_used = to_amplitude(np.asarray(diffraction), units)
        meta = dict(metadata or {})
        meta["input_units"] = units_used
        if units == "auto":
            meta["units_detected"] = units_used
        return cls(
            diffraction=amplitude,
            positions=positions,
            probe=probe,
            obj=obj,
            positions_start=positions_start,
            scan_index=scan_index,
            patches=patches,
            metadata=meta,
        )

    def __repr__(self) -> str:
        optional = [name for name in ("obj", "positions_start", "scan_index", "patches")
                    if getattr(self, name) is not None]
        obj = "" if self.obj is None else f", obj={self.obj.shape}"
        return (f"ScanData(M={self.n_points}, N={self.N}{obj}, optional={optional}, "
                f"metadata_keys={sorted(self.metadata)})")

    # ------------------------------------------------------------------ properties
    @property
    def n_points(self) -> int:
        """Number of scan points M."""
        return int(self.diffraction.shape[0])

    @property
    def N(self) -> int:  # noqa: N802 - N is the field name used throughout ptychography
        """Pattern (and probe) size N in pixels."""
        return int(self.diffraction.shape[-1])

    def subset(self, indices: Any) -> ScanData:
        """Return a new scan with only the selected points.

        Args:
            indices: ``[K]`` integer indices into ``0..M-1`` (repeats allowed, negative counts from the
                end), a ``[M]`` boolean mask, or a slice.

        Returns:
            A validated scan with K points; probe, object and metadata are shared.

        Raises:
            PtychoInputError: indices out of range, of a non-integer type, or a mask of the wrong length.
        """
        m = self.n_points
        if isinstance(indices, slice):
            idx = np.arange(m)[indices]
        else:
            idx = np.asarray(indices)
            if idx.dtype == np.bool_:
                if idx.shape != (m,):
                    raise PtychoInputError(
                        f"subset: boolean mask must have shape ({m},), found {idx.shape}; "
                        "build the mask over all scan points"
                    )
                idx = np.flatnonzero(idx)
            elif idx.size == 0:
                idx = idx.astype(np.int64)
            elif not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
                raise PtychoInputError(
                    f"subset: expected a 1-D integer index array, a boolean mask or a slice, found "
                    f"{describe_array(idx)}; pass e.g. np.arange(10)"
                )
            elif idx.max() >= m or idx.min() < -m:
                raise PtychoInputError(
                    f"subset: indices must lie in [-{m}, {m - 1}], found range [{idx.min()}, {idx.max()}]; "
                    f"the scan has {m} points"
                )

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return replace(
            self,
            diffraction=self.diffraction[idx],
            positions=self.positions[idx],
            positions_start=take(self.positions_start),
            scan_index=take(self.scan_index),
            patches=take(self.patches),
            metadata=dict(self.metadata),
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Cast fields to their canonical dtypes and check the whole contract.

        Raises:
            DataFormatError: the first violated rule, naming the field, what was expected, what was
                found and how to fix it.
        """
        set_ = object.__setattr__  # the dataclass is frozen; casting happens only here
        raw = np.asarray(self.diffraction)
        if np.iscomplexobj(raw):
            raise _fail("diffraction", "real amplitude sqrt(counts)", f"complex data ({describe_array(raw)})",
                        "store np.abs of the far field, not the complex field")
        if np.issubdtype(raw.dtype, np.integer):
            raise _fail("diffraction", "float amplitude sqrt(counts)",
                        f"integer data ({describe_array(raw)}), which look like photon counts",
                        "use ScanData.from_arrays(..., units='intensity' or 'auto') to take the square root")
        diff = _as_real("diffraction", raw, np.float32)
        set_(self, "diffraction", diff)
        self._check_diffraction()
        m, n = self.n_points, self.N

        pos = _as_real("positions", self.positions, np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise _fail("positions", f"shape ({m}, 2) ordered (x, y)", describe_array(pos),
                        "stack them as np.stack([xcoords, ycoords], axis=1)")
        _check_m("positions", m, pos.shape[0])
        _check_finite("positions", pos)
        set_(self, "positions", pos)

        probe = _as_complex("probe", self.probe, allow_real=True)
        if probe.shape != (n, n):
            found = f"{probe.shape}" if probe.ndim == 2 else describe_array(probe)
            raise DataFormatError(
                f"probe is {found} but patterns are ({n}, {n}); resample the probe or crop the patterns"
            )
        _check_finite("probe", probe)
        set_(self, "probe", probe)

        if self.probe_modes is not None:
            modes = _as_complex("probe_modes", self.probe_modes, allow_real=True)
            if modes.ndim != 3 or modes.shape[1:] != (n, n) or modes.shape[0] < 2:
                raise _fail("probe_modes", f"shape (K, {n}, {n}) with K >= 2 incoherent modes",
                            describe_array(modes), "pass None for a single mode, or stack the modes first")
            _check_finite("probe_modes", modes)
            set_(self, "probe_modes", modes)

        if self.obj is not None:
            obj = _as_complex("obj", self.obj, allow_real=True)
            if obj.ndim != 2 or min(obj.shape) < 1:
                raise _fail("obj", "a 2-D [H, W] complex object", describe_array(obj),
                            "pass a single object layer")
            _check_finite("obj", obj)
            set_(self, "obj", obj)
            self._check_positions_inside(obj.shape)

        if self.positions_start is not None:
            start = _as_real("positions_start", self.positions_start, np.float64)
            if start.ndim != 2 or start.shape[1] != 2:
                raise _fail("positions_start", f"shape ({m}, 2) ordered (x, y)", describe_array(start),
                            "stack them as np.stack([xcoords_start, ycoords_start], axis=1)")
            _check_m("positions_start", m, start.shape[0])
            _check_finite("positions_start", start)
            set_(self, "positions_start", start)

        if self.scan_index is not None:
            set_(self, "scan_index", self._checked_scan_index(m))

        if self.patches is not None:
            patches = _as_complex("patches", self.patches, allow_real=False)
            if patches.shape[1:] != (n, n) or patches.ndim != 3:
                raise _fail("patches", f"shape ({m}, {n}, {n})", describe_array(patches),
                            "give one N x N complex object patch per pattern")
            _check_m("patches", m, patches.shape[0])
            _check_finite("patches", patches)
            set_(self, "patches", patches)

        if not isinstance(self.metadata, Mapping):
            raise _fail("metadata", "a dict", type(self.metadata).__name__, "pass a JSON-serialisable dict")
        meta = dict(self.metadata)
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise _fail("metadata", "JSON-serialisable values", f"{exc}",
                        "convert numpy scalars/arrays with float()/.tolist()") from exc
        set_(self, "metadata", meta)
        for name in PHYSICAL_FIELDS:
            set_(self, name, _physical_value(name, getattr(self, name)))
        if self.valid_pixels is not None:
            set_(self, "valid_pixels", self._checked_valid_pixels(n))

    def _checked_valid_pixels(self, n: int) -> np.ndarray:
        valid = np.asarray(self.valid_pixels)
        if valid.shape != (n, n) or not (valid.dtype == bool or np.issubdtype(valid.dtype, np.integer)):
            raise _fail("valid_pixels", f"a ({n}, {n}) boolean detector mask (True = measured pixel)",
                        describe_array(valid), "give one flag per detector pixel of the N x N patterns")
        valid = valid.astype(bool)
        if not valid.any():
            raise _fail("valid_pixels", "at least one measured pixel", "every pixel masked",
                        "check the mask's convention: True (or 1) marks a GOOD pixel")
        return valid

    def pixel_weights(self) -> np.ndarray | None:
        """``[N, N]`` float32 1/0 weights of the detector pixels (1 = measured), or None when all are measured."""
        return None if self.valid_pixels is None else self.valid_pixels.astype(np.float32)

    def physical(self) -> dict[str, float]:
        """The known physical quantities: a subset of ``{'pixel_size_m', 'energy_ev', 'distance_m'}``."""
        return {name: getattr(self, name) for name in PHYSICAL_FIELDS if getattr(self, name) is not None}

    def _check_diffraction(self) -> None:
        diff = self.diffraction
        if diff.ndim != 3:
            raise _fail("diffraction", "shape (M, N, N)", describe_array(diff),
                        "stack the patterns along the first axis")
        m, h, w = diff.shape
        if m == 0:
            raise _fail("diffraction", "at least one pattern", "an empty scan (M = 0)",
                        "check the input file")
        if h != w:
            raise _fail("diffraction", "square N x N patterns", f"{h} x {w}", "crop the patterns to a square")
        if w < MIN_N:
            raise _fail("diffraction", f"N >= {MIN_N}", f"N = {w}", "use larger patterns")
        if w % 2:
            raise _fail("diffraction", "an even pattern size N (DC at pixel N/2)", f"N = {w}",
                        "crop or pad the patterns by one pixel")
        _check_diffraction_values(diff)

    def _check_positions_inside(self, obj_shape: tuple[int, ...]) -> None:
        h, w = obj_shape
        x, y = self.positions[:, 0], self.positions[:, 1]
        # distance outside the box [0, W-1] x [0, H-1], 0 for points inside
        dx = np.maximum(np.maximum(-x, x - (w - 1)), 0.0)
        dy = np.maximum(np.maximum(-y, y - (h - 1)), 0.0)
        outside = np.hypot(dx, dy)
        n_out = int(np.count_nonzero(outside > 0))
        if n_out:
            worst = int(np.argmax(outside))
            raise _fail(
                "positions",
                f"probe centres inside the object, x in [0, {w - 1}] and y in [0, {h - 1}] pixels",
                f"{n_out} of {self.n_points} outside; worst is point {worst} at "
                f"(x={x[worst]:.6g}, y={y[worst]:.6g})",
                "positions are object pixels (x = column, y = row), not metres: check units or pad it",
            )

    def _checked_scan_index(self, m: int) -> np.ndarray:
        idx = np.asarray(self.scan_index)
        if not _is_numeric(idx.dtype):
            raise _fail("scan_index", "integers", describe_array(idx), "pass an int array")
        if idx.ndim != 1:
            raise _fail("scan_index", f"shape ({m},)", describe_array(idx), "give one integer per pattern")
        _check_m("scan_index", m, idx.shape[0])
        if np.issubdtype(idx.dtype, np.floating):
            _check_finite("scan_index", idx)
            if not np.all(idx == np.round(idx)):
                raise _fail("scan_index", "whole numbers", "fractional values", "pass an int array")
        return idx.astype(np.int64, copy=False)
