"""Streaming stitching of predicted complex patches into one object image.

PIXEL CONVENTION (read this before using the output)
----------------------------------------------------
* Positions are ``(x, y)`` in object pixels, x = column, y = row, exactly as in
  :class:`~ptychopinn.data.scan.ScanData` and :mod:`ptychopinn.physics.patches`.
* A canvas has an ``origin = (x0, y0)`` (object pixels, integers from :func:`canvas_geometry`):
  canvas pixel ``(row, col)`` is object pixel ``(y0 + row, x0 + col)``.
* With the default origin ``(0, 0)`` the canvas has exactly the pixel grid of the object and the scan
  positions: canvas pixel ``(0, 0)`` is the top-left object pixel, and a patch centred at position
  ``(x, y)`` lands with its centre pixel ``(N//2, N//2)`` on canvas ``(row=y, col=x)``. No recentring on
  the scan's centre of mass, no flip, no transpose: ``canvas[y, x]`` is the reconstruction of object
  pixel ``(y, x)``, so it can be compared with a ground-truth object pixel for pixel.

Only the central ``window x window`` region of each ``N x N`` patch is used (the border of a predicted
patch is unreliable): patch rows/cols ``N//2 - window//2 ... N//2 - window//2 + window - 1``. That
keeps the cropped window's own centre pixel ``window//2`` on the scan position, for odd and even sizes.

Each window is added onto the canvas with :func:`~ptychopinn.physics.patches.place_patches`
(bilinear at sub-pixel positions, the exact adjoint of extraction) and a window of ones is added the
same way onto a coverage canvas; the result is ``sum(patches) / coverage``, i.e. the coverage-weighted
average of all overlapping windows. Pixels no window reached are 0.

Memory is the two canvases (plus a bounded buffer of ``flush_size`` cropped windows):
:class:`Stitcher` accumulates batch by batch, so the number of patches it can stitch is unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.physics.patches import place_patches

__all__ = ["Stitcher", "canvas_geometry", "crop_window", "stitch_patches"]

MAX_CANVAS_PIXELS = 1 << 30  # 8 GiB of complex64: a larger canvas means positions in the wrong units
_STITCH_BATCH = 2048  # patches per place_patches call in stitch_patches: bounds the temporaries


def _check_window(window: int, n: int | None = None) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ConfigError(f"stitch window must be a positive integer number of pixels; found {window!r}; "
                          f"pass e.g. 20 for N=64")
    if n is not None and window > n:
        raise ConfigError(f"stitch window must be at most the patch size N={n}; found {window}; "
                          f"lower the window (N*5//16 = {max(2, n * 5 // 16)} is the default)")
    return int(window)


def _positions_array(positions: torch.Tensor | np.ndarray, count: int | None = None) -> np.ndarray:
    """``[P, 2]`` float64 (x, y) px as numpy, validated (shape, finiteness, optional count)."""
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    pos = np.asarray(positions)
    if pos.dtype.kind not in "iuf" or pos.ndim != 2 or pos.shape[1] != 2:
        raise DataFormatError(f"positions: expected a real [P, 2] (x, y) pixel array, found "
                              f"{describe_array(pos)}; stack them as np.stack([x, y], axis=1)")
    if count is not None and pos.shape[0] != count:
        raise DataFormatError(f"positions: expected one (x, y) per patch ({count}), found {pos.shape[0]}; "
                              f"pass positions of the same patches")
    pos = pos.astype(np.float64, copy=False)
    if not np.isfinite(pos).all():
        raise DataFormatError("positions: expected finite values, found NaN/inf; drop or repair those points")
    return pos


def crop_window(patches: torch.Tensor, window: int) -> torch.Tensor:
    """Central ``window x window`` region of ``[P, N, N]`` patches whose centre stays on the position.

    Rows/cols ``N//2 - window//2 ... N//2 - window//2 + window - 1``; returns a ``[P, window, window]``
    view (same dtype and device). Window pixel ``window//2`` is patch pixel ``N//2``.
    """
    n = patches.shape[-1]
    _check_window(window, n)
    start = n // 2 - window // 2
    return patches[..., start:start + window, start:start + window]


class Stitcher:
    """Accumulates complex patches into one canvas batch by batch; memory = the canvas, independent of
    the number of patches.

    Args:
        shape: ``(H, W)`` canvas size in pixels.
        window: side in pixels of the central region of each patch that is placed.
        origin: ``(x0, y0)`` object pixel of canvas pixel ``(0, 0)`` (see the module docstring).
        device: torch device of the canvases (patches are moved there); default CPU.
        flush_size: cropped windows are buffered until this many are pending, then placed in one call:
            placement has a fixed cost per call, so small batches (64 patches per network batch) would
            otherwise run at half speed. The buffer holds ``flush_size * window**2`` complex values.

    The canvases are ``[1, H, W]`` complex64 (sum of windows) and ``[1, H, W]`` float32 (coverage).
    """

    def __init__(self, shape: tuple[int, int], window: int, *, origin: tuple[float, float] = (0.0, 0.0),
                 device: torch.device | str | None = None, flush_size: int = 1024, taper: float = 0.0) -> None:
        if (len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                       for s in shape) or min(shape) < 1):
            raise ConfigError(f"canvas shape: expected (H, W) positive integers, found {shape!r}; "
                              f"use canvas_geometry() to compute it")
        if len(origin) != 2 or not all(math.isfinite(float(o)) for o in origin):
            raise ConfigError(f"canvas origin: expected finite (x0, y0) pixels, found {origin!r}; "
                              f"use canvas_geometry() to compute it")
        self.shape = (int(shape[0]), int(shape[1]))
        self.window = _check_window(window)
        self.origin = (float(origin[0]), float(origin[1]))
        self.device = torch.device("cpu" if device is None else device)
        if isinstance(flush_size, bool) or not isinstance(flush_size, int) or flush_size < 1:
            raise ConfigError(f"flush_size: expected a positive integer, found {flush_size!r}; use 1024")
        self.flush_size = flush_size
        self.n_patches = 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._n_pending = 0
        self._sum = torch.zeros((1, *self.shape), dtype=torch.complex64, device=self.device)
        self._cov = torch.zeros((1, *self.shape), dtype=torch.float32, device=self.device)
        if not (isinstance(taper, (int, float)) and math.isfinite(taper) and taper >= 0):
            raise ConfigError(f"taper: expected a finite number >= 0, found {taper!r}; use 0 for uniform weights")
        self.weight = _taper_weight(self.window, float(taper)).to(self.device)
        self._ones: torch.Tensor | None = None  # cached [P, w, w] weights, regrown when a batch is larger

    def add(self, patches: torch.Tensor | np.ndarray, positions: torch.Tensor | np.ndarray) -> None:
        """Add a batch of patches.

        Args:
            patches: ``[P, N, N]`` complex (real is accepted and cast), object transmission; N >= window.
            positions: ``[P, 2]`` (x, y) object pixels of each patch centre (patch pixel ``(N//2, N//2)``).
        """
        t = torch.as_tensor(patches)
        if t.ndim != 3 or t.shape[-1] != t.shape[-2]:
            raise DataFormatError(f"patches: expected [P, N, N], found {describe_array(t)}; "
                                  f"flatten groups with patches.reshape(-1, N, N)")
        p = int(t.shape[0])
        pos = _positions_array(positions, p)
        if p == 0:
            return
        # A copy of the small window (not a view of the caller's patch batch, which may be reused).
        win = crop_window(t, self.window).to(device=self.device, dtype=torch.complex64, copy=True) * self.weight
        # Shift into canvas coordinates once, in float64, so large object coordinates keep sub-pixel detail.
        rel = torch.from_numpy(pos - np.asarray(self.origin)).to(self.device)
        self._pending.append((win, rel))
        self._n_pending += p
        self.n_patches += p
        if self._n_pending >= self.flush_size:
            self._flush()

    def _flush(self) -> None:
        """Place every pending window on the canvases (one call each for values and coverage)."""
        if not self._pending:
            return
        win = torch.cat([w for w, _ in self._pending])
        rel = torch.cat([r for _, r in self._pending])
        self._pending.clear()
        self._n_pending = 0
        p = int(win.shape[0])
        place_patches(win, rel, self.shape, out=self._sum)
        if self._ones is None or self._ones.shape[0] < p:
            self._ones = self.weight.expand(p, self.window, self.window).contiguous()
        place_patches(self._ones[:p], rel, self.shape, out=self._cov)

    def result(self, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """Coverage-normalised average of everything added so far.

        Returns:
            ``(obj, coverage)``: ``obj`` ``[H, W]`` complex64, the average of the overlapping windows
            (0 where coverage <= eps); ``coverage`` ``[H, W]`` float32, the summed (bilinear) weights,
            i.e. roughly how many windows cover each pixel.
        """
        self._flush()
        cov = self._cov[0]
        covered = cov > eps
        # Divide only where covered: a convex combination of window values, never an amplification.
        obj = torch.where(covered, self._sum[0] / torch.where(covered, cov, torch.ones_like(cov)),
                          torch.zeros_like(self._sum[0]))
        return obj.cpu().numpy().astype(np.complex64, copy=False), cov.cpu().numpy().astype(np.float32)


def _taper_weight(window: int, taper: float) -> torch.Tensor:
    """Stitching weight ``[w, w]`` float32: ``1 + taper * bump``, with ``bump`` a separable raised
    cosine equal to 1 at the window centre and near 0 at its edges.

    Weights are >= 1, so coverage still counts windows (at least), while a positive ``taper`` lets
    the centre of each patch, where the network is most reliable, dominate the edges of its
    neighbours: this softens the seams between windows of slightly inconsistent patches.
    """
    i = torch.arange(window, dtype=torch.float64)
    bump1 = 0.5 - 0.5 * torch.cos(2 * math.pi * (i + 1) / (window + 1))
    return (1.0 + taper * bump1[:, None] * bump1[None, :]).to(torch.float32)


def _window_extent(pos: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest object pixel (x, y) touched by any window, ``[2]`` int64 each.

    A window centred at x covers columns ``x - w//2 ... x - w//2 + w - 1``; at a fractional x, bilinear
    placement spills into one more column, which ``ceil`` accounts for.
    """
    lo = np.floor(pos.min(axis=0) - window // 2).astype(np.int64)
    hi = np.ceil(pos.max(axis=0) - window // 2 + window - 1).astype(np.int64)
    return lo, hi


def canvas_geometry(
    positions: torch.Tensor | np.ndarray, N: int, window: int,  # noqa: N803 - N is the standard name
    object_shape: tuple[int, int] | None = None,
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Canvas ``shape`` and ``origin`` that hold every stitched window.

    Args:
        positions: ``[M, 2]`` (x, y) object pixels of the patch centres.
        N: patch size in pixels (the window must fit in it).
        window: stitch window side in pixels.
        object_shape: ``(H, W)`` of the object grid; when given it is the canvas (origin ``(0, 0)``) and
            windows reaching outside it are clipped.

    Returns:
        ``((H, W), (x0, y0))``. Without ``object_shape``: the bounding box of all windows, extended to
        include object pixel ``(0, 0)``; the origin is ``(0, 0)`` when every window lies at non-negative
        coordinates, else the (integer) smallest coordinate touched, so nothing is lost.
    """
    _check_window(window, int(N))
    if object_shape is not None:
        if (len(object_shape) != 2 or not all(isinstance(s, (int, np.integer)) for s in object_shape)
                or min(object_shape) < 1):
            raise ConfigError(f"object_shape: expected (H, W) positive integers, found {object_shape!r}; "
                              f"pass obj.shape")
        return (int(object_shape[0]), int(object_shape[1])), (0.0, 0.0)
    pos = _positions_array(positions)
    if pos.shape[0] == 0:
        raise DataFormatError("positions: expected at least one scan position, found none; check the scan")
    lo, hi = _window_extent(pos, window)
    origin = np.minimum(lo, 0)
    size = hi - origin + 1
    if int(size[0]) * int(size[1]) > MAX_CANVAS_PIXELS:
        raise DataFormatError(
            f"positions span a {int(size[1])} x {int(size[0])} pixel canvas (more than {MAX_CANVAS_PIXELS:,} "
            f"pixels); check the scan positions are in object pixels (not metres or nanometres)")
    return (int(size[1]), int(size[0])), (float(origin[0]), float(origin[1]))


def stitch_patches(patches: torch.Tensor | np.ndarray, positions: torch.Tensor | np.ndarray, window: int,
                   shape: tuple[int, int] | None = None, origin: Sequence[float] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Stitch a stack of patches in one call (batched internally, so temporaries stay small).

    Args:
        patches: ``[P, N, N]`` complex patches (numpy or torch, any device).
        positions: ``[P, 2]`` (x, y) object pixels of the patch centres.
        window: stitch window side in pixels.
        shape: canvas ``(H, W)``; default: :func:`canvas_geometry` (from ``origin`` if one is given).
        origin: ``(x0, y0)`` of canvas pixel ``(0, 0)``; default ``(0, 0)`` with an explicit ``shape``.

    Returns:
        ``(obj [H, W] complex64, coverage [H, W] float32)`` as :meth:`Stitcher.result`.
    """
    t = torch.as_tensor(patches)
    if t.ndim != 3:
        raise DataFormatError(f"patches: expected [P, N, N], found {describe_array(t)}; "
                              f"flatten groups with patches.reshape(-1, N, N)")
    pos = _positions_array(positions, int(t.shape[0]))
    if shape is None:
        geo_shape, geo_origin = canvas_geometry(pos, int(t.shape[-1]), window)
        if origin is None:
            shape, origin = geo_shape, geo_origin
        else:
            # Extend from the caller's origin to the far edge of the windows.
            _, hi = _window_extent(pos, window)
            shape = (max(1, math.ceil(hi[1] - float(origin[1])) + 1),
                     max(1, math.ceil(hi[0] - float(origin[0])) + 1))
    st = Stitcher(shape, window, origin=(0.0, 0.0) if origin is None else (origin[0], origin[1]),
                  device=t.device)
    for start in range(0, t.shape[0], _STITCH_BATCH):
        st.add(t[start:start + _STITCH_BATCH], pos[start:start + _STITCH_BATCH])
    return st.result()
