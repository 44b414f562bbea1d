"""CXI files (Coherent X-ray Imaging format 1.6, HDF5): detector frames, scan positions in metres and the
beam geometry, converted to a scan on the object pixel grid.

Read (paths inside ``entry_1``):

* frames ``data_1/data`` (often a link to ``instrument_1/detector_1/data``), shape ``[M, ny, nx]``;
* translations ``sample_1/geometry_1/translation`` (or ``data_1/translation``), ``[M, 2|3]`` (x, y[, z]) in
  metres (a ``units`` attribute of ``mm``, ``um`` or ``nm`` is converted);
* photon energy ``instrument_1/source_1/energy`` in J (the CXI unit) or in eV/keV when its ``units``
  attribute says so; or ``instrument_1/source_1/wavelength`` in m;
* ``instrument_1/detector_1/distance`` (m), ``x_pixel_size`` and ``y_pixel_size`` (m, equal);
* a ``units`` attribute of the frames (``counts`` or ``amplitude``) is honoured by ``units='auto'``;
* optional ``instrument_1/detector_1/mask`` (``[ny, nx]``, nonzero = bad pixel; becomes the scan's
  ``valid_pixels``, so those pixels are set to 0 and left out of every likelihood; the count is in
  ``metadata['bad_pixels']``) and a probe ``instrument_1/source_1/illumination`` or ``image_1/data``
  (``[N, N]``, or ``[K, N, N]`` incoherent modes first: mode 0 is the scan's ``probe`` and all K its
  ``probe_modes`` for mixed-state refinement) on the object pixel grid.

Geometry: wavelength = h c / E; object pixel size dx = wavelength * distance / (N * detector pixel size) for
the N x N patterns used; a translation t (m) becomes the object pixel ``(t - min t) / dx + N/2``, so the
scan's corner sits half a pattern inside the canvas (``metadata['position_origin_m']`` keeps ``min t``).
Writers differ in the sign of the translations: ``flip_x`` / ``flip_y`` mirror them. With ``crop=N`` the frames
are cut to N x N around the zero order, and the pixel size, positions and probe follow
(:mod:`ptychopinn.io.frames`, the rule of every scan format).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError, ProbeNotFoundError
from ptychopinn.io import h5guard
from ptychopinn.io.atomic import atomic_path
from ptychopinn.io.frames import FrameOptions
from ptychopinn.io.hdf5 import H5Source, open_h5
from ptychopinn.io.schema import check_units, probe_layout, scan_from_source

HC_EV_M = 1.23984198e-6
"""Planck constant times the speed of light, in eV m."""
EV_J = 1.602176634e-19
"""One electronvolt in joules."""

_DATA = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
_TRANSLATION = ("entry_1/sample_1/geometry_1/translation", "entry_1/data_1/translation")
logger = logging.getLogger("ptychopinn")

_PROBE = ("entry_1/instrument_1/source_1/illumination", "entry_1/image_1/data", "entry_1/instrument_1/source_1/probe")
_DETECTOR = "entry_1/instrument_1/detector_1"
_SOURCE = "entry_1/instrument_1/source_1"
_LENGTH_UNITS = {"m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0, "mm": 1e-3, "um": 1e-6,
                 "micron": 1e-6, "microns": 1e-6, "nm": 1e-9}


MAX_TRANSLATION_M = 1.0
"""Largest |translation| accepted, in metres: scans span micrometres to millimetres; more is a unit error."""


def _first(f: Any, paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if h5guard.has(f, p)), None)


def _units(f: Any, dset: Any, key: str) -> str | None:
    raw = h5guard.attribute(f, dset, "units", f"'{key}'")
    if raw is None:
        return None
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1)[0] if raw.size else ""
    return str(raw).strip()


def _scalar(f: Any, path: Path, key: str, what: str) -> tuple[float, str | None]:
    if not h5guard.has(f, key):
        raise DataFormatError(f"{path}: CXI file lacks '{key}' ({what}); add it (the geometry is needed to put the "
                              "positions on the object pixel grid)")
    dset = h5guard.dataset(f, key)
    if dset.dtype.kind not in "iuf" or dset.size != 1:
        raise DataFormatError(f"{path}: '{key}' ({what}) must be one real number, found "
                              f"{dset.shape} {dset.dtype}")
    value = float(np.asarray(h5guard.read(f, dset, key)).reshape(-1)[0])
    if not (np.isfinite(value) and value > 0):
        raise DataFormatError(f"{path}: '{key}' ({what}) must be a positive finite number, found {value}")
    return value, _units(f, dset, key)


def _length(value: float, units: str | None, path: Path, key: str) -> float:
    if units is None or units == "":
        return value
    scale = _LENGTH_UNITS.get(units.lower())
    if scale is None:
        raise DataFormatError(f"{path}: '{key}' has units '{units}'; expected one of m, mm, um, nm")
    return value * scale


def cxi_energy_ev(f: Any, path: Path) -> float:
    """Photon energy in eV from ``source_1/energy`` (J, or eV/keV per its units) or ``source_1/wavelength`` (m)."""
    if not h5guard.has(f, f"{_SOURCE}/energy") and h5guard.has(f, f"{_SOURCE}/wavelength"):
        wl, units = _scalar(f, path, f"{_SOURCE}/wavelength", "wavelength, m")
        energy = HC_EV_M / _length(wl, units, path, "wavelength")
    else:
        value, units = _scalar(f, path, f"{_SOURCE}/energy", "photon energy, J")
        unit = (units or "").lower()
        if unit in ("j", "joule", "joules"):
            energy = value / EV_J
        elif unit == "ev":
            energy = value
        elif unit == "kev":
            energy = value * 1e3
        elif unit == "":
            if value > 1e-10:  # 1e-10 J is 600 MeV: a number this large was not written in joules
                raise DataFormatError(
                    f"{path}: '{_SOURCE}/energy' is {value:g} with no units attribute; CXI energies are in joules, "
                    "where this is absurd: add the attribute units='eV' (or 'keV', 'J') to say what it is"
                )
            energy = value / EV_J
        else:
            raise DataFormatError(f"{path}: '{_SOURCE}/energy' has units '{units}'; expected J, eV or keV")
    if not 10.0 <= energy <= 1e7:
        raise DataFormatError(f"{path}: photon energy {energy:.4g} eV is outside 10 eV .. 10 MeV; check the energy "
                              "and its units attribute")
    return energy


class _CxiSource(H5Source):
    """The CXI datasets under the scan key names, with the translations converted to object pixels."""

    def __init__(self, path: Path, f: Any, data_path: str, positions: np.ndarray, probe_path: str | None):
        names = {"diffraction": data_path}
        if probe_path is not None:
            names["probeGuess"] = probe_path
        super().__init__(path, f, names)
        self.positions = positions

    def keys(self) -> set[str]:
        return {*self.names, "xcoords", "ycoords"}

    def shape(self, key: str) -> tuple[int, ...]:
        if key in ("xcoords", "ycoords"):
            return (self.positions.shape[0],)
        return super().shape(key)

    def dtype(self, key: str) -> np.dtype:
        return np.dtype(np.float64) if key in ("xcoords", "ycoords") else super().dtype(key)

    def read(self, key: str) -> np.ndarray:
        if key in ("xcoords", "ycoords"):
            return self.positions[:, 0 if key == "xcoords" else 1].copy()
        arr = super().read(key)
        if key == "probeGuess" and _mode_count(arr.shape) > 1:
            return arr[0]  # the first mode is the probe; load_cxi keeps them all as the scan's probe_modes
        return arr

    def probe_modes(self) -> np.ndarray | None:
        """Every mode ``[K, N, N]`` complex64 of a modes-first illumination with K >= 2, else None."""
        if "probeGuess" not in self.names or _mode_count(super().shape("probeGuess")) < 2:
            return None
        return np.asarray(super().read("probeGuess")).astype(np.complex64)


def _mode_count(shape: tuple[int, ...]) -> int:
    """K of a modes-first ``[K, N, N]`` probe shape (0 for any other shape)."""
    return int(shape[0]) if len(shape) == 3 and shape[1] == shape[2] and shape[0] != shape[1] else 0

    def metadata_text(self) -> str | None:
        return None


def cxi_geometry(f: Any, path: Path, n: int) -> dict[str, float]:
    """``{'energy_ev', 'wavelength_m', 'distance_m', 'detector_pixel_m', 'pixel_size_m'}`` for N x N patterns."""
    energy = cxi_energy_ev(f, path)
    distance = _length(*_scalar(f, path, f"{_DETECTOR}/distance", "detector distance, m"), path, "distance")
    px = _length(*_scalar(f, path, f"{_DETECTOR}/x_pixel_size", "detector pixel width, m"), path, "x_pixel_size")
    py = _length(*_scalar(f, path, f"{_DETECTOR}/y_pixel_size", "detector pixel height, m"), path, "y_pixel_size")
    if abs(px - py) > 1e-6 * max(px, py):
        raise DataFormatError(f"{path}: detector pixels are {px:g} x {py:g} m; only square pixels are supported")
    if not 1e-4 <= distance <= 1e3 or not 1e-7 <= px <= 1e-2:
        raise DataFormatError(f"{path}: absurd geometry: detector distance {distance:g} m, pixel size {px:g} m "
                              "(expected 0.1 mm .. 1 km and 0.1 um .. 1 cm); check the values and their units")
    wavelength = HC_EV_M / energy
    return {"energy_ev": energy, "wavelength_m": wavelength, "distance_m": distance, "detector_pixel_m": px,
            "pixel_size_m": wavelength * distance / (n * px)}


def _translations(f: Any, path: Path, m: int) -> np.ndarray:
    key = _first(f, _TRANSLATION)
    if key is None:
        raise DataFormatError(f"{path}: CXI file has no scan positions (looked for {list(_TRANSLATION)}); add "
                              "entry_1/sample_1/geometry_1/translation [M, 3] in metres")
    dset = h5guard.dataset(f, key)
    if dset.dtype.kind not in "iuf" or dset.ndim != 2 or dset.shape[1] not in (2, 3):
        raise DataFormatError(f"{path}: '{key}' must be [M, 2|3] real numbers (x, y[, z]) in metres, found "
                              f"shape={dset.shape} dtype={dset.dtype}")
    if dset.shape[0] != m:
        raise DataFormatError(f"{path}: '{key}' has {dset.shape[0]} positions but there are {m} frames; store one "
                              "translation per frame")
    t = np.asarray(h5guard.read(f, dset, key), dtype=np.float64)[:, :2] * _length(1.0, _units(f, dset, key), path, key)
    if not np.all(np.isfinite(t)):
        raise DataFormatError(f"{path}: '{key}' contains NaN/Inf; repair the positions")
    if np.abs(t).max() > MAX_TRANSLATION_M:
        raise DataFormatError(f"{path}: '{key}' holds a translation of {np.abs(t).max():.3g} m; scans span "
                              f"at most {MAX_TRANSLATION_M:g} m: check the values and their units attribute")
    return t


def load_cxi(path: str | os.PathLike[str], units: str = "auto", *, probe: np.ndarray | str | None = None,
             mapping: str = "auto", threshold: int | None = None, frames: FrameOptions | None = None) -> ScanData:
    """Read a CXI file (module docstring) into a :class:`ScanData` with its physical metadata.

    Args:
        path: the ``.cxi`` file.
        units, probe, mapping, threshold: as :func:`ptychopinn.io.registry.load_scan`.
        frames: crop window and mirrored axes (:mod:`ptychopinn.io.frames`); frames that are not square need a
            crop.

    Returns:
        A validated scan: float32 amplitude ``[M, N, N]``, positions in object pixels, ``pixel_size_m``,
        ``energy_ev`` and ``distance_m`` set; ``metadata`` holds ``position_origin_m``,
        ``detector_pixel_m`` and ``bad_pixels`` (masked pixels inside the patterns, left out of the likelihoods).

    Raises:
        FileNotFoundError, ConfigError, DataFormatError (missing datasets, wrong ranks, inconsistent counts,
        missing or absurd units and geometry).
    """
    check_units(units)
    p = Path(path)
    with open_h5(p, "CXI file") as f:
        data_path = _first(f, _DATA)
        if data_path is None:
            raise DataFormatError(f"{p}: CXI file has no diffraction frames (looked for {list(_DATA)})")
        dset = h5guard.dataset(f, data_path)
        if dset.ndim != 3:
            raise DataFormatError(f"{p}: '{data_path}' must be frames [M, ny, nx], found shape={dset.shape}")
        m, ny, nx = (int(d) for d in dset.shape)
        if m == 0 or ny == 0 or nx == 0:
            raise DataFormatError(f"{p}: '{data_path}' holds no frames (shape {dset.shape}); expected [M, ny, nx] "
                                  "with at least one frame")
        # object pixels of the frames as stored, per axis (a crop to a square window rescales them)
        geo = cxi_geometry(f, p, nx)
        pixel_y = geo["wavelength_m"] * geo["distance_m"] / (ny * geo["detector_pixel_m"])
        t = _translations(f, p, m)
        origin = t.min(axis=0)
        positions = (t - origin) / np.array([geo["pixel_size_m"], pixel_y]) + np.array([nx / 2, ny / 2])
        valid = None
        if h5guard.has(f, f"{_DETECTOR}/mask"):
            mask_dset = h5guard.dataset(f, f"{_DETECTOR}/mask")
            if mask_dset.shape != (ny, nx) or mask_dset.dtype.kind not in "iub":
                raise DataFormatError(f"{p}: '{_DETECTOR}/mask' must be integers [{ny}, {nx}], found "
                                      f"shape={mask_dset.shape} dtype={mask_dset.dtype}")
            mask = np.asarray(h5guard.read(f, mask_dset, f"{_DETECTOR}/mask"))
            if np.any(mask):
                valid = mask == 0
        probe_path = _first(f, _PROBE) if probe is None else None
        src = _CxiSource(p, f, data_path, positions, probe_path)
        extra: dict[str, Any] = {"source_format": "cxi", "position_origin_m": origin.tolist(),
                                 "detector_pixel_m": geo["detector_pixel_m"]}
        stated = (_units(f, dset, data_path) or "").lower()
        if stated in ("counts", "photons", "intensity", "amplitude"):  # honoured by units='auto'
            extra["diffraction_units"] = "amplitude" if stated == "amplitude" else "intensity"
        modes = src.probe_modes()
        if modes is not None:
            extra["probe_modes"] = int(modes.shape[0])
            logger.info("%s: the probe has %d incoherent modes; refinement uses them all (--probe-modes K to "
                        "choose how many)", p, modes.shape[0])
        scan = scan_from_source(src, units, probe=probe, mapping=mapping, threshold=threshold, extra_metadata=extra,
                                physical={k: geo[k] for k in ("pixel_size_m", "energy_ev", "distance_m")},
                                valid_pixels=valid, frames=frames, probe_modes=modes)
    # masked pixels inside the patterns as read (a crop may leave some out)
    scan.metadata["bad_pixels"] = 0 if scan.valid_pixels is None else int(np.count_nonzero(~scan.valid_pixels))
    return scan


def load_cxi_probe(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``[N, N]`` complex64 probe stored in a CXI file (mode 0).

    Raises:
        ProbeNotFoundError: the file has no probe.
    """
    p = Path(path)
    with open_h5(p, "CXI file") as f:
        key = _first(f, _PROBE)
        if key is None:
            raise ProbeNotFoundError(f"{p}: CXI file has no probe (looked for {list(_PROBE)}); no probe found")
        arr = np.asarray(H5Source(p, f, {"probe": key}).read("probe"))
    while arr.ndim > 2 and arr.shape[0] >= 1:
        arr = arr[0]  # mode 0 of [modes, N, N] or [coherent, incoherent, N, N]
    return probe_layout(arr, p, key).astype(np.complex64)


def save_cxi(path: str | os.PathLike[str], scan: ScanData, *, counts: bool = True) -> Path:
    """Write a scan as a CXI 1.6 file, atomically (needs ``pixel_size_m``, ``energy_ev`` and ``distance_m``).

    Frames go to ``instrument_1/detector_1/data`` (linked from ``data_1/data``) as counts (amplitude squared;
    float32) or amplitude (``counts=False``), translations ``(positions - N/2) * pixel_size_m`` in metres
    (z = 0), energy in J, the detector pixel size ``wavelength * distance / (N * pixel_size_m)`` and the probe
    as ``source_1/illumination``.
    """
    import h5py

    missing = [k for k in ("pixel_size_m", "energy_ev", "distance_m") if getattr(scan, k) is None]
    if missing:
        raise ConfigError(f"save_cxi needs the scan's {missing}; set them (ScanData fields) first")
    n = scan.N
    assert scan.pixel_size_m is not None and scan.energy_ev is not None and scan.distance_m is not None
    wavelength = HC_EV_M / scan.energy_ev
    det_px = wavelength * scan.distance_m / (n * scan.pixel_size_m)
    t = np.zeros((scan.n_points, 3))
    t[:, :2] = (scan.positions - n / 2) * scan.pixel_size_m
    frames = np.square(np.asarray(scan.diffraction, np.float32)) if counts else np.asarray(scan.diffraction)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["cxi_version"] = 160
        det = f.create_group(_DETECTOR)
        det["data"] = frames
        det["data"].attrs["units"] = "counts" if counts else "amplitude"
        if scan.valid_pixels is not None:
            det["mask"] = (~scan.valid_pixels).astype(np.uint32)  # CXI: nonzero = bad pixel
        det["distance"] = scan.distance_m
        det["x_pixel_size"] = det_px
        det["y_pixel_size"] = det_px
        src = f.create_group(_SOURCE)
        src["energy"] = scan.energy_ev * EV_J
        src["illumination"] = scan.probe
        f.create_group("entry_1/sample_1/geometry_1")["translation"] = t
        f.create_group("entry_1/data_1")["data"] = h5py.SoftLink(f"/{_DETECTOR}/data")
    return Path(path)
