"""ptychodus product HDF5 files (``*.h5``): reconstructed object, probe and positions in metres.

Layout (the names ptychodus's ``H5ProductFileIO`` reads and writes):

* root attributes ``name``, ``comments`` (str), ``detector_object_distance_m``,
  ``photon_energy_eV`` (required), ``exposure_time_s``, ``probe_photon_count``,
  ``mass_attenuation_m2_per_kg``, ``tomography_angle_deg`` (optional), all float64. ptychodus 1.7.0
  uses these names; older ptychodus used ``probe_energy_eV`` and ``mass_attenuation_m2_kg``. Both
  spellings are written (so old and new readers work) and either is accepted on reading, where
  metadata comes back under the 1.7.0 names;
* ``probe_position_indexes`` [M] int64 (index of the diffraction pattern of each point),
  ``probe_position_x_m``, ``probe_position_y_m`` [M] float64;
* ``probe`` complex64, ``[I, N, N]`` (incoherent modes) or ``[C, I, N, N]`` (with coherent/OPR
  modes), attributes ``pixel_width_m``, ``pixel_height_m``;
* ``object`` complex64 ``[L, H, W]`` (layers), attributes ``center_x_m``, ``center_y_m``,
  ``pixel_width_m``, ``pixel_height_m``; dataset ``object_layer_spacing_m`` [L-1] float64;
* ``loss_values`` [E] float64 (readers also accept the old name ``costs``), ``loss_epochs`` [E] int64.

Coordinates. ptychodus maps a position in metres to object pixels with

    x_px = (x_m - center_x_m) / pixel_width_m + (W - 1) / 2
    y_px = (y_m - center_y_m) / pixel_height_m + (H - 1) / 2

(x = column, y = row), so a point at the object centre is pixel ``(W-1)/2``. This module uses
exactly that mapping in both directions. Note the convention gap: a ptychopinn position is the object
point under patch pixel ``N//2`` (upstream PtychoPINN's rule), whereas ptychodus puts the probe array's
centre ``(N-1)/2`` on it (``ProbeGeometry.resolve_patch_bounds``), half a pixel apart at even N: the
object point under patch pixel ``N//2`` is ``ptychodus position + ptychodus_centre_offset(N)``. This
module reads and writes positions unchanged; the ptychodus-facing reconstruction surfaces (``ptycho``,
``ptycho_torch.api``) apply the offset when they stitch.

h5py is imported by the functions, not at module import, so that importing ptychopinn stays cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.io.atomic import atomic_path

if TYPE_CHECKING:
    from ptychopinn.data.scan import ScanData

_FLOAT_ATTRS: dict[str, float] = {
    # placeholders where the physics is unknown: 1.0 for quantities ptychodus may divide by
    "detector_object_distance_m": 1.0,
    "photon_energy_eV": 1.0,
    "probe_photon_count": 0.0,
    "exposure_time_s": 1.0,
    "mass_attenuation_m2_per_kg": 0.0,
    "tomography_angle_deg": 0.0,
}
# legacy (pre-1.7 ptychodus) spelling -> current spelling
_LEGACY_NAMES: dict[str, str] = {
    "probe_energy_eV": "photon_energy_eV",
    "mass_attenuation_m2_kg": "mass_attenuation_m2_per_kg",
}
_STR_ATTRS: dict[str, str] = {"name": "ptychopinn", "comments": ""}
_EXTRA_ATTR = "ptychopinn_metadata"  # JSON of metadata keys that ptychodus has no attribute for
_REQUIRED_ROOT_ATTRS = ("detector_object_distance_m", "photon_energy_eV")
_REQUIRED_DATASETS = (
    "probe_position_indexes", "probe_position_x_m", "probe_position_y_m", "probe", "object",
    "object_layer_spacing_m",
)


@dataclass(frozen=True, eq=False)  # array fields: identity equality instead of ambiguous elementwise
class Product:
    """Contents of a ptychodus product file, positions converted to object pixels.

    Attributes:
        obj: ``[H, W]`` complex64, object layer 0.
        object_layers: ``[L, H, W]`` complex64, all object layers.
        probe: ``[N, N]`` complex64, coherent mode 0 / incoherent mode 0.
        probe_array: the probe as stored, promoted to ``[C, I, N, N]`` complex64.
        positions: ``[M, 2]`` float64 ``(x, y)`` = (column, row) in object pixels.
        positions_m: ``[M, 2]`` float64 ``(x, y)`` in metres, as stored.
        position_indexes: ``[M]`` int64 diffraction-pattern index of each point.
        pixel_size_m: object pixel ``(width, height)`` in metres.
        center_m: object centre ``(x, y)`` in metres.
        probe_pixel_size_m: probe pixel ``(width, height)`` in metres.
        layer_spacing_m: ``[L-1]`` float64 spacing between object layers in metres.
        metadata: root attributes (``name``, ``comments``, ``probe_energy_eV``, ...) plus any extra
            ptychopinn metadata saved with the file.
        losses: ``[E]`` float64 loss per epoch.
        loss_epochs: ``[E]`` int64 epoch of each loss.
    """

    obj: np.ndarray
    object_layers: np.ndarray
    probe: np.ndarray
    probe_array: np.ndarray
    positions: np.ndarray
    positions_m: np.ndarray
    position_indexes: np.ndarray
    pixel_size_m: tuple[float, float]
    center_m: tuple[float, float]
    probe_pixel_size_m: tuple[float, float]
    layer_spacing_m: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    loss_epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def ptychodus_centre_offset(n: int) -> float:
    """``N//2 - (N-1)/2`` pixels (0.5 for even N, 0 for odd): add it to a ptychodus position (the object point
    under the probe array's centre ``(N-1)/2``) to get the object point under patch pixel ``N//2``."""
    return n // 2 - (n - 1) / 2.0


def pixels_to_metres(positions_px: np.ndarray, shape_hw: tuple[int, int], pixel_size_m: tuple[float, float],
                     center_m: tuple[float, float]) -> np.ndarray:
    """Object pixels -> metres, the inverse of ptychodus's mapping.

    Args:
        positions_px: ``[M, 2]`` ``(x, y)`` in object pixels.
        shape_hw: object ``(H, W)``.
        pixel_size_m: ``(width, height)`` of an object pixel in metres.
        center_m: object centre ``(x, y)`` in metres.

    Returns:
        ``[M, 2]`` float64 ``(x, y)`` in metres.
    """
    h, w = shape_hw
    p = np.asarray(positions_px, dtype=np.float64)
    x = (p[:, 0] - (w - 1) / 2.0) * pixel_size_m[0] + center_m[0]
    y = (p[:, 1] - (h - 1) / 2.0) * pixel_size_m[1] + center_m[1]
    return np.stack([x, y], axis=1)


def metres_to_pixels(positions_m: np.ndarray, shape_hw: tuple[int, int], pixel_size_m: tuple[float, float],
                     center_m: tuple[float, float]) -> np.ndarray:
    """Metres -> object pixels: ``x_px = (x_m - cx) / pixel_width + (W-1)/2``, same for y with H.

    Args:
        positions_m: ``[M, 2]`` ``(x, y)`` in metres.
        shape_hw: object ``(H, W)``.
        pixel_size_m: ``(width, height)`` of an object pixel in metres.
        center_m: object centre ``(x, y)`` in metres.

    Returns:
        ``[M, 2]`` float64 ``(x, y)`` in object pixels.
    """
    h, w = shape_hw
    p = np.asarray(positions_m, dtype=np.float64)
    x = (p[:, 0] - center_m[0]) / pixel_size_m[0] + (w - 1) / 2.0
    y = (p[:, 1] - center_m[1]) / pixel_size_m[1] + (h - 1) / 2.0
    return np.stack([x, y], axis=1)


def _pair(name: str, value: float | Sequence[float], *, positive: bool) -> tuple[float, float]:
    vals: tuple[Any, ...] = (value, value) if np.isscalar(value) else tuple(value)  # type: ignore[arg-type]
    try:
        pair = (float(vals[0]), float(vals[1]))
    except (TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"{name} must be a number or an (x, y) pair, got {value!r}") from exc
    if len(vals) != 2 or not all(np.isfinite(pair)) or (positive and min(pair) <= 0):
        need = "two positive finite numbers" if positive else "two finite numbers"
        raise ConfigError(f"{name} must be a number or an (x, y) pair of {need}, got {value!r}")
    return pair


def _complex_array(name: str, a: Any, ndims: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iufc" or arr.ndim not in ndims or arr.size == 0:
        raise DataFormatError(f"{name} must be a non-empty complex array with {' or '.join(map(str, ndims))} "
                              f"dimensions, found {describe_array(arr)}; pass the reconstructed array")
    arr = arr.astype(np.complex64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise DataFormatError(f"{name} contains NaN/Inf values; repair them before saving")
    return arr


def save_product_h5(
    path: str | os.PathLike[str],
    obj: np.ndarray,
    positions_px: np.ndarray,
    probe: np.ndarray,
    *,
    pixel_size_m: float | Sequence[float] = 1e-8,
    center_m: Sequence[float] = (0.0, 0.0),
    metadata: Mapping[str, Any] | None = None,
    losses: Sequence[float] | np.ndarray | None = None,
    position_indexes: np.ndarray | None = None,
) -> Path:
    """Write a ptychodus product HDF5 file atomically.

    Args:
        path: destination file (missing parent directories are created).
        obj: ``[H, W]`` or ``[L, H, W]`` complex object (stored as ``[L, H, W]`` complex64).
        positions_px: ``[M, 2]`` ``(x, y)`` probe positions in object pixels; converted to metres
            with the mapping in the module docstring.
        probe: ``[N, N]``, ``[I, N, N]`` or ``[C, I, N, N]`` complex probe (2-D is stored as
            ``[1, N, N]``); its pixel size is taken equal to the object's (ptychopinn's probe lives on
            the object grid).
        pixel_size_m: object pixel size in metres, a number or ``(width, height)``.
        center_m: object centre ``(x, y)`` in metres.
        metadata: root attributes to set (``name``, ``comments``, ``detector_object_distance_m``,
            ``probe_energy_eV``, ``probe_photon_count``, ``exposure_time_s``,
            ``mass_attenuation_m2_kg``, ``tomography_angle_deg``); other JSON-serialisable keys are
            kept in the root attribute ``ptychopinn_metadata``.
        losses: ``[E]`` loss per epoch (stored as ``loss_values`` with ``loss_epochs = 0..E-1``).
        position_indexes: ``[M]`` integer pattern index of each point; default ``0..M-1``.

    Returns:
        The written path.
    """
    import h5py

    path = Path(path)
    obj_arr = _complex_array("object", obj, (2, 3))
    if obj_arr.ndim == 2:
        obj_arr = obj_arr[None]
    probe_arr = _complex_array("probe", probe, (2, 3, 4))
    if probe_arr.ndim == 2:
        probe_arr = probe_arr[None]
    pos = np.asarray(positions_px)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.dtype.kind not in "iuf" or not np.all(np.isfinite(pos)):
        raise DataFormatError(f"positions_px must be a finite real (M, 2) array of (x, y) object pixels, "
                              f"found {describe_array(pos)}; stack them as np.stack([x, y], axis=1)")
    m = pos.shape[0]
    if position_indexes is None:
        indexes = np.arange(m, dtype=np.int64)
    else:
        indexes = np.asarray(position_indexes)
        if indexes.shape != (m,) or indexes.dtype.kind not in "iu":
            raise DataFormatError(f"position_indexes must be ({m},) integers, found "
                                  f"{describe_array(indexes)}; give one pattern index per position")
        indexes = indexes.astype(np.int64)
    pix = _pair("pixel_size_m", pixel_size_m, positive=True)
    cen = _pair("center_m", center_m, positive=False)
    loss_values = np.asarray([] if losses is None else losses, dtype=np.float64).reshape(-1)

    floats = dict(_FLOAT_ATTRS)
    strings = dict(_STR_ATTRS)
    extra: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        key = _LEGACY_NAMES.get(key, key)
        if key in floats:
            try:
                floats[key] = float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"metadata[{key!r}] must be a number, got {value!r}") from exc
        elif key in strings:
            strings[key] = str(value)
        else:
            extra[key] = value
    try:
        extra_json = json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"metadata must be JSON-serialisable ({exc}); convert numpy values with .tolist()"
        ) from exc

    positions_m = pixels_to_metres(pos, obj_arr.shape[1:], pix, cen)
    with atomic_path(path) as tmp_name:
        with h5py.File(tmp_name, "w") as f:
            for key, text in strings.items():
                f.attrs[key] = text
            for key, number in floats.items():
                f.attrs[key] = np.float64(number)
            for legacy, current in _LEGACY_NAMES.items():
                f.attrs[legacy] = np.float64(floats[current])
            if extra:
                f.attrs[_EXTRA_ATTR] = extra_json
            f.create_dataset("probe_position_indexes", data=indexes)
            f.create_dataset("probe_position_x_m", data=positions_m[:, 0])
            f.create_dataset("probe_position_y_m", data=positions_m[:, 1])
            d_probe = f.create_dataset("probe", data=probe_arr)
            d_probe.attrs["pixel_width_m"] = np.float64(pix[0])
            d_probe.attrs["pixel_height_m"] = np.float64(pix[1])
            d_obj = f.create_dataset("object", data=obj_arr)
            d_obj.attrs["center_x_m"] = np.float64(cen[0])
            d_obj.attrs["center_y_m"] = np.float64(cen[1])
            d_obj.attrs["pixel_width_m"] = np.float64(pix[0])
            d_obj.attrs["pixel_height_m"] = np.float64(pix[1])
            f.create_dataset("object_layer_spacing_m", data=np.zeros(obj_arr.shape[0] - 1, np.float64))
            f.create_dataset("loss_values", data=loss_values)
            f.create_dataset("loss_epochs", data=np.arange(loss_values.size, dtype=np.int64))
    return path


def _attr_str(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size == 1 else value
    return str(value)


def _attr_float(value: Any, key: str, where: str, path: Path, default: float | None = None) -> float:
    """Attribute ``value`` (None when absent) of ``where`` as a float; ``default`` for an absent optional one."""
    if value is None:
        if default is not None:
            return default
        raise DataFormatError(f"{path}: {where} lacks the attribute '{key}'; not a complete ptychodus "
                              "product file (write one with save_product_h5)")
    try:
        return float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise DataFormatError(
            f"{path}: attribute '{key}' of {where} is not a number ({str(value)[:80]!r}); fix the writer"
        ) from exc


def load_product_h5(path: str | os.PathLike[str]) -> Product:
    """Read a ptychodus product HDF5 file (every dataset and attribute through
    :mod:`ptychopinn.io.h5guard`: links, storage, filters and declared sizes checked).

    Args:
        path: the ``.h5``/``.hdf5`` file.

    Returns:
        A :class:`Product` with positions converted to object pixels (module docstring mapping).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: not an HDF5 file, or a required dataset/attribute is missing or malformed.
    """
    from ptychopinn.io import h5guard

    path = Path(path)
    with h5guard.open_h5(path, "product file") as f:
        missing = [k for k in _REQUIRED_DATASETS if not h5guard.has(f, k)]
        if not h5guard.has(f, "loss_values") and not h5guard.has(f, "costs"):
            missing.append("loss_values")
        if missing:
            raise DataFormatError(f"{path}: missing datasets {missing}; found {sorted(f.keys())}; "
                                  "not a ptychodus product file (write one with save_product_h5)")
        try:
            return _read_product(f, path)
        except (TypeError, ValueError, OSError, KeyError) as exc:
            if isinstance(exc, DataFormatError):
                raise
            raise DataFormatError(f"{path}: malformed ptychodus product file ({type(exc).__name__}: {exc}); "
                                  "re-export it from ptychodus or save_product_h5") from exc


def _read_product(f: Any, path: Path) -> Product:
    from ptychopinn.io import h5guard
    from ptychopinn.io.metadata import parse_metadata

    def attr(obj: Any, key: str, where: str) -> Any:
        return h5guard.attribute(f, obj, key, where)

    def array(key: str) -> np.ndarray:
        return np.asarray(h5guard.read(f, h5guard.dataset(f, key), key))

    meta: dict[str, Any] = {}
    attrs = {key: attr(f, key, "the root") for key in (*_STR_ATTRS, *_FLOAT_ATTRS, *_LEGACY_NAMES)}
    for legacy, current in _LEGACY_NAMES.items():
        if attrs[current] is None and attrs[legacy] is not None:
            attrs[current] = attrs[legacy]
    for key in _REQUIRED_ROOT_ATTRS:
        if attrs[key] is None:
            raise DataFormatError(f"{path}: the root lacks the attribute '{key}'; not a complete ptychodus "
                                  "product file (write one with save_product_h5)")
    for key, text in _STR_ATTRS.items():
        meta[key] = _attr_str(attrs[key]) if attrs[key] is not None else text
    for key, number in _FLOAT_ATTRS.items():
        meta[key] = _attr_float(attrs[key], key, "the root", path, None if key in _REQUIRED_ROOT_ATTRS else number)
    extra_text = attr(f, _EXTRA_ATTR, "the root")
    if extra_text is not None:
        meta.update(parse_metadata(_attr_str(extra_text), path, _EXTRA_ATTR))

    d_obj, d_probe = h5guard.dataset(f, "object"), h5guard.dataset(f, "probe")
    obj_layers = _complex_array(f"{path}: 'object'", h5guard.read(f, d_obj, "object"), (2, 3))
    if obj_layers.ndim == 2:
        obj_layers = obj_layers[None]
    probe_arr = _complex_array(f"{path}: 'probe'", h5guard.read(f, d_probe, "probe"), (2, 3, 4))
    while probe_arr.ndim < 4:
        probe_arr = probe_arr[None]
    pix = (_attr_float(attr(d_obj, "pixel_width_m", "'object'"), "pixel_width_m", "'object'", path),
           _attr_float(attr(d_obj, "pixel_height_m", "'object'"), "pixel_height_m", "'object'", path))
    cen = (_attr_float(attr(d_obj, "center_x_m", "'object'"), "center_x_m", "'object'", path),
           _attr_float(attr(d_obj, "center_y_m", "'object'"), "center_y_m", "'object'", path))
    probe_pix = (_attr_float(attr(d_probe, "pixel_width_m", "'probe'"), "pixel_width_m", "'probe'", path),
                 _attr_float(attr(d_probe, "pixel_height_m", "'probe'"), "pixel_height_m", "'probe'", path))
    if not (np.all(np.isfinite([*pix, *probe_pix])) and min(pix) > 0 and min(probe_pix) > 0):
        raise DataFormatError(f"{path}: pixel sizes must be finite and > 0 m, found object {pix}, probe {probe_pix}; "
                              "fix the pixel_width_m/pixel_height_m attributes")
    if not np.all(np.isfinite(cen)):
        raise DataFormatError(f"{path}: the object centre must be finite, found {cen}; fix center_x_m/center_y_m")

    for key in ("probe_position_x_m", "probe_position_y_m", "probe_position_indexes"):
        dtype = h5guard.dataset(f, key).dtype
        if dtype.kind not in "iuf":
            raise DataFormatError(f"{path}: '{key}' must be real numbers, found dtype {dtype}; fix the writer")
    xs = array("probe_position_x_m").astype(np.float64).reshape(-1)
    ys = array("probe_position_y_m").astype(np.float64).reshape(-1)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise DataFormatError(f"{path}: probe positions contain NaN/Inf; fix the writer")
    idx = array("probe_position_indexes").reshape(-1).astype(np.int64)
    if not (xs.size == ys.size == idx.size):
        raise DataFormatError(f"{path}: probe_position_x_m/_y_m/_indexes have {xs.size}/{ys.size}/{idx.size} "
                              "entries; they must have one entry per scan point")
    loss_key = "loss_values" if h5guard.has(f, "loss_values") else "costs"
    losses = array(loss_key).astype(np.float64).reshape(-1)
    if h5guard.has(f, "loss_epochs"):
        epochs = array("loss_epochs").reshape(-1).astype(np.int64)
    else:
        epochs = np.arange(losses.size, dtype=np.int64)
    spacing = array("object_layer_spacing_m").astype(np.float64).reshape(-1)

    positions_m = np.stack([xs, ys], axis=1)
    return Product(
        obj=obj_layers[0],
        object_layers=obj_layers,
        probe=probe_arr[0, 0],
        probe_array=probe_arr,
        positions=metres_to_pixels(positions_m, obj_layers.shape[1:], pix, cen),
        positions_m=positions_m,
        position_indexes=idx,
        pixel_size_m=pix,
        center_m=cen,
        probe_pixel_size_m=probe_pix,
        layer_spacing_m=spacing,
        metadata=meta,
        losses=losses,
        loss_epochs=epochs,
    )


def save_scan_product(path: Path, obj: Any, origin: Any, positions: Any, probe: Any, scan: ScanData,
                      source: str) -> Path:
    """A ptychodus product of the canvas ``obj`` ``[H, W]`` complex, whose pixel ``(0, 0)`` is object pixel
    ``origin`` (x, y), with ``positions`` ``[M, 2]`` (x, y) in object pixels, ``probe`` ``[N, N]`` complex, and the
    scan's real pixel size, energy and distance where known (placeholders else); ``source`` names what made it."""
    positions_px = np.asarray(positions) - np.asarray(origin)[None, :]
    meta: dict[str, Any] = {"source": source}
    if scan.energy_ev is not None:
        meta["photon_energy_eV"] = scan.energy_ev
    if scan.distance_m is not None:
        meta["detector_object_distance_m"] = scan.distance_m
    kwargs: dict[str, Any] = {}
    if scan.pixel_size_m is not None:
        kwargs["pixel_size_m"] = scan.pixel_size_m
    else:
        meta["pixel_size_unknown"] = True
    return save_product_h5(path, obj, positions_px, probe, metadata=meta, **kwargs)
