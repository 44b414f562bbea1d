"""How a scan's detector frames and positions are read, the same for every scan format: a crop window around
the zero order (with the probe, positions and pixel size that belong to it) and mirrored scan axes.

Options (:func:`ptychopinn.io.registry.load_scan` keywords; command line flags in brackets):

* ``crop`` (``--crop N``): cut every frame to the ``N x N`` window centred on the zero order, so the zero
  order lands on pixel ``(N/2, N/2)`` where the core expects the zero frequency. Frames that are not square
  need it. The window starts at row ``round(row) - N/2`` and column ``round(col) - N/2`` of the zero order
  ``(row, col)``.
* ``crop_centre`` (``--crop-centre ROW,COL``): that zero order, in pixels of the frames as the format
  delivers them (zero frequency nominally at ``(ny/2, nx/2)``; a tike file's frames after its ``fftshift``).
  Default: :func:`estimate_zero_order`, the centre of point symmetry of the mean frame of all patterns.
* ``flip_x`` / ``flip_y`` (``--flip-x``, ``--flip-y``): mirror the x (or y) positions within their bounding
  box, ``x -> min(x) + max(x) - x``: for stages whose axis points the other way. (For a CXI file this equals
  negating its translations.)

Physics of the crop: ``n`` detector pixels of pitch ``p`` give object pixels of ``wavelength * distance /
(n * p)``, so cutting ``N -> n`` makes the object pixels ``N / n`` times larger. Positions (object pixels)
are scaled by ``n / nx`` (x) and ``n / ny`` (y), ``pixel_size_m`` by ``nx / n``; the probe stored with the
scan (a field on the object grid of the full frames) is resampled by cutting its far field to the same
detector window (:func:`ptychopinn.physics.probe.crop_far_field`), which keeps it consistent with the
cropped patterns, off-centre windows included. A ground-truth object and patches live on the old grid and are
dropped. ``metadata['frames']`` records what was done.

Cropping happens batch by batch as the stack is read, so memory stays bounded; a cropped stack is never
memory-mapped in place.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.config_fields import is_int
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.limits import check_memory

logger = logging.getLogger(__name__)

__all__ = ["FRAME_FLAGS", "CroppedSource", "CropWindow", "FrameOptions", "crop_window", "estimate_zero_order",
           "mirror", "mirrored_positions", "probe_for_window", "symmetry_centre"]

FRAME_FLAGS: dict[str, str] = {"crop": "--crop", "crop_centre": "--crop-centre", "flip_x": "--flip-x",
                               "flip_y": "--flip-y"}
"""The reader options and their command line flags."""

CENTRE_SAMPLE_BYTES = 2 << 30
"""Raw pattern bytes averaged for the zero-order estimate: every pattern of a stack up to this size, else the
first ones that fit (a second pass over a huge compressed file would cost as much as reading it)."""

_SEARCH_BYTES_PER_PIXEL = 56  # the float64 mean frame and the zero-padded real FFTs of it and its rotation


def _flag(name: str) -> str:
    return f"{FRAME_FLAGS[name]} ({name}=)"


@dataclass(frozen=True)
class FrameOptions:
    """Validated reader options (module docstring). Build with :meth:`of`."""

    crop: int | None = None
    crop_centre: tuple[float, float] | None = None
    flip_x: bool = False
    flip_y: bool = False

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> FrameOptions:
        """Check ``options`` (a subset of :data:`FRAME_FLAGS`' keys); errors name the command line flag.

        Raises:
            ConfigError: an unknown option or a bad value.
        """
        unknown = sorted(set(options) - set(FRAME_FLAGS))
        if unknown:
            raise ConfigError(f"unknown reader options {unknown}; expected some of {sorted(FRAME_FLAGS)} (command "
                              f"line {', '.join(FRAME_FLAGS.values())})")
        crop = options.get("crop")
        if crop is not None:
            if not is_int(crop) or crop < 8 or crop % 2:
                raise ConfigError(f"{_flag('crop')}: expected an even number of pixels >= 8, found {crop!r}; "
                                  "e.g. --crop 64")
            crop = int(crop)
        centre = options.get("crop_centre")
        if centre is not None:
            try:
                row, col = (float(v) for v in centre)
            except (TypeError, ValueError):
                raise ConfigError(f"{_flag('crop_centre')}: expected two numbers (row, column) in detector "
                                  f"pixels, found {centre!r}; e.g. --crop-centre 64,65.5") from None
            if not (math.isfinite(row) and math.isfinite(col)):
                raise ConfigError(f"{_flag('crop_centre')}: expected finite pixel coordinates, found {centre!r}")
            if crop is None:
                raise ConfigError(f"{_flag('crop_centre')} places the crop window: expected it with "
                                  f"{_flag('crop')}, found it alone; add --crop N")
            centre = (row, col)
        flips: dict[str, bool] = {}
        for name in ("flip_x", "flip_y"):
            value = options.get(name, False)
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"{_flag(name)}: expected True or False, found {value!r}")
            flips[name] = bool(value)
        return cls(crop=crop, crop_centre=centre, flip_x=flips["flip_x"], flip_y=flips["flip_y"])

    @property
    def active(self) -> bool:
        """Whether any option changes what the reader delivers."""
        return self.crop is not None or self.flip_x or self.flip_y


@dataclass(frozen=True)
class CropWindow:
    """An ``n x n`` window ``[row0:row0+n, col0:col0+n]`` of ``frame``-sized detector frames."""

    row0: int
    col0: int
    n: int
    frame: tuple[int, int]
    centre: tuple[float, float]
    estimated: bool

    def cut(self, a: np.ndarray) -> np.ndarray:
        """The window of the last two axes of ``a`` (a view)."""
        return a[..., self.row0:self.row0 + self.n, self.col0:self.col0 + self.n]

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Factors from object pixels of the full frames to those of the window, ``(n / nx, n / ny)``."""
        return self.n / self.frame[1], self.n / self.frame[0]

    def resample_probe(self, probe: np.ndarray) -> np.ndarray:
        """``[ny, nx]`` probe of the full frames -> ``[n, n]`` complex64 probe of the window."""
        import torch

        from ptychopinn.physics.probe import crop_far_field

        out = crop_far_field(torch.from_numpy(np.asarray(probe, np.complex64)), self.row0, self.col0, self.n)
        return out.numpy()

    def metadata(self) -> dict[str, Any]:
        return {"crop": self.n, "frame_shape": list(self.frame), "window_row_col": [self.row0, self.col0],
                "zero_order_row_col": [round(self.centre[0], 3), round(self.centre[1], 3)],
                "zero_order": "estimated" if self.estimated else "given"}


def symmetry_centre(image: np.ndarray) -> tuple[float, float]:
    """``(row, col)`` about which ``image`` (``[h, w]`` real) is most nearly point-symmetric.

    The peak of the cross-correlation of the image (mean removed, zero-padded) with its 180-degree rotation,
    refined to a fraction of a pixel by a parabola through the peak and its neighbours: if ``f(c + d) =
    f(c - d)``, the rotated copy ``f[h-1-i]`` is ``f`` moved by ``2c - (h-1)``, so ``c = (shift + h - 1) / 2``.
    A far-field pattern is nearly point-symmetric about the zero order (Friedel's law for a weak object, and
    the symmetric aperture of the optics), also when its brightness is not: the centre of mass of a zone-plate
    annulus that is brighter on one side is pulled that way, this centre is not. A constant image gives the
    nominal centre ``(h/2, w/2)``.
    """
    f = np.asarray(image, np.float64)
    h, w = f.shape
    f = f - f.mean()
    if not np.any(f):
        return h / 2, w / 2
    shape = (2 * h, 2 * w)
    corr = np.fft.irfft2(np.fft.rfft2(f, shape) * np.conj(np.fft.rfft2(f[::-1, ::-1], shape)), shape)
    peak = np.unravel_index(int(np.argmax(corr)), corr.shape)
    centre = []
    for axis, size in enumerate(shape):
        k = int(peak[axis])
        lo, hi = list(peak), list(peak)
        lo[axis], hi[axis] = (k - 1) % size, (k + 1) % size
        a, b, c = corr[tuple(lo)], corr[peak], corr[tuple(hi)]
        curvature = a - 2 * b + c
        frac = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
        shift = (k + size // 2) % size - size // 2 + float(np.clip(frac, -0.5, 0.5))
        centre.append((shift + f.shape[axis] - 1) / 2)
    return float(centre[0]), float(centre[1])


def _stack_dims(src: Any, key: str) -> tuple[int, int, int]:
    shape = tuple(src.shape(key))
    if len(shape) == 4 and shape[-1] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataFormatError(f"{src.path}: '{key}' must be (M, ny, nx) to be cropped, found shape "
                              f"{tuple(src.shape(key))}; stack the patterns along the first axis")
    return int(shape[0]), int(shape[1]), int(shape[2])


def estimate_zero_order(src: Any, key: str, valid: np.ndarray | None = None) -> tuple[float, float]:
    """``(row, col)`` of the zero order of the pattern stack ``key`` of ``src`` (an
    :class:`~ptychopinn.io.schema.ArraySource`): :func:`symmetry_centre` of the square root of the mean frame
    (all patterns up to :data:`CENTRE_SAMPLE_BYTES`; masked pixels, ``~valid``, count as 0).

    Raises:
        DataFormatError: the search would exceed the memory limit.
    """
    m, ny, nx = _stack_dims(src, key)
    itemsize = src.dtype(key).itemsize
    check_memory(ny * nx * _SEARCH_BYTES_PER_PIXEL, f"{src.path}: the zero-order search over {ny} x {nx} frames",
                 "crop the frames before reading, or give the centre with --crop-centre ROW,COL",
                 error=DataFormatError)
    frame_bytes = max(ny * nx * itemsize, 1)
    rows_total = max(1, min(m, CENTRE_SAMPLE_BYTES // frame_bytes))
    rows = max(1, min(rows_total, (64 << 20) // frame_bytes))
    total = np.zeros((ny, nx), np.float64)
    seen = 0
    for batch in src.batches(key, rows):
        b = np.asarray(batch, dtype=np.float64).reshape(-1, ny, nx)[: rows_total - seen]
        total += np.clip(np.nan_to_num(b, nan=0.0, posinf=0.0, neginf=0.0), 0, None).sum(axis=0)  # checked later
        seen += b.shape[0]
        if seen >= rows_total:
            break
    mean = total / max(seen, 1)
    if valid is not None:
        mean[~valid] = 0.0
    centre = symmetry_centre(np.sqrt(mean))
    logger.info("%s: zero order estimated at (row %.2f, col %.2f) from the mean of %d of %d patterns (centre of "
                "point symmetry; give --crop-centre ROW,COL to override)", src.path, centre[0], centre[1], seen, m)
    return centre


def crop_window(src: Any, key: str, options: FrameOptions, valid: np.ndarray | None = None) -> CropWindow:
    """The crop window of ``options.crop`` pixels around the given or estimated zero order.

    Raises:
        ConfigError: the crop is larger than the frames, or the given centre puts the window outside them.
        DataFormatError: the estimated zero order puts the window outside the frames.
    """
    assert options.crop is not None
    _, ny, nx = _stack_dims(src, key)
    n = options.crop
    if n > min(ny, nx):
        raise ConfigError(f"{_flag('crop')} {n} is larger than the {ny} x {nx} frames of {src.path}; expected at "
                          f"most {min(ny, nx) - min(ny, nx) % 2}")
    estimated = options.crop_centre is None
    if options.crop_centre is None:
        row, col = estimate_zero_order(src, key, valid)
    else:
        row, col = options.crop_centre
    row0, col0 = math.floor(row + 0.5) - n // 2, math.floor(col + 0.5) - n // 2
    if row0 < 0 or col0 < 0 or row0 + n > ny or col0 + n > nx:
        where, fix = ("estimated", "give the centre with") if estimated else ("given", "move")
        text = (f"{src.path}: a {n} x {n} crop around the {where} zero order at (row {row:.1f}, col {col:.1f}) "
                f"leaves the {ny} x {nx} frames; use a smaller --crop or {fix} --crop-centre ROW,COL")
        raise (DataFormatError if estimated else ConfigError)(text)
    return CropWindow(row0, col0, n, (ny, nx), (float(row), float(col)), estimated)


class CroppedSource:
    """An :class:`~ptychopinn.io.schema.ArraySource` whose pattern stack ``key`` is cut to ``window`` as it is
    read (batch by batch); every other key passes through unchanged."""

    def __init__(self, src: Any, key: str, window: CropWindow):
        self.src, self.key, self.window = src, key, window
        self.path = src.path

    def keys(self) -> set[str]:
        return set(self.src.keys())

    def shape(self, key: str) -> tuple[int, ...]:
        if key == self.key:
            return (_stack_dims(self.src, key)[0], self.window.n, self.window.n)
        return tuple(self.src.shape(key))

    def dtype(self, key: str) -> np.dtype:
        return np.dtype(self.src.dtype(key))

    def read(self, key: str) -> np.ndarray:
        if key != self.key:
            return np.asarray(self.src.read(key))
        _, ny, nx = _stack_dims(self.src, key)
        rows = max(1, (64 << 20) // max(ny * nx * self.dtype(key).itemsize, 1))
        parts = list(self.batches(key, rows))
        return np.concatenate(parts) if parts else np.zeros(self.shape(key), self.dtype(key))

    def batches(self, key: str, rows: int) -> Iterator[np.ndarray]:
        if key != self.key:
            yield from self.src.batches(key, rows)
            return
        _, ny, nx = _stack_dims(self.src, key)
        for block in self.src.batches(key, rows):
            yield np.ascontiguousarray(self.window.cut(np.asarray(block).reshape(-1, ny, nx)))

    def mapped(self, key: str, strict: bool = False) -> np.ndarray | None:
        if key != self.key:
            return self.src.mapped(key, strict)
        if strict:
            raise DataFormatError(f"{self.path}: cropped frames cannot be memory-mapped; read the scan without "
                                  "--crop, or crop it once (load_scan(..., crop=N) then save_npz) and map that file")
        return None

    def metadata_text(self) -> str | None:
        return self.src.metadata_text()


def mirror(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo + hi - values``: coordinates mirrored within ``[lo, hi]``."""
    return lo + hi - values


def probe_for_window(probe: np.ndarray, window: CropWindow, path: Path | str, what: str) -> np.ndarray:
    """``probe`` on the object grid of the cropped frames: resampled when it belongs to the full frames, kept
    when it already has the crop's size."""
    if probe.shape == window.frame:
        logger.info("%s: %s resampled to the %d x %d crop (its far field cut to the same detector window)", path,
                    what, window.n, window.n)
        return window.resample_probe(probe)
    if probe.shape == (window.n, window.n):
        return probe
    raise DataFormatError(f"{path}: {what} is {probe.shape} but the frames are {window.frame[0]} x "
                          f"{window.frame[1]}, cropped to {window.n} x {window.n}; expected a probe of either size")


def mirrored_positions(positions: np.ndarray, start: np.ndarray | None,
              frames: FrameOptions) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions (and nominal positions) with the flipped axes mirrored within the positions' bounding box."""
    positions = positions.copy()
    start = None if start is None else start.copy()
    lo, hi = positions.min(axis=0), positions.max(axis=0)
    for axis, flip in enumerate((frames.flip_x, frames.flip_y)):
        if flip:
            positions[:, axis] = mirror(positions[:, axis], lo[axis], hi[axis])
            if start is not None:
                start[:, axis] = mirror(start[:, axis], lo[axis], hi[axis])
    return positions, start
