"""Streaming stitching of predicted complex patches into one object image.

PIXEL CONVENTION (read this before using the output)
----------------------------------------------------
* Positions are ``(x, y)`` in object pixels, x = column, y = row, exactly as in
  :class:`~ptychopinn.data.scan.ScanData` and :mod:`ptychopinn.physics.patches`.
* A canvas has an ``origin = (x0, y0)`` (object pixels; integers from :func:`canvas_geometry`):
  canvas pixel ``(row, col)`` is object pixel ``(y0 + row, x0 + col)``.
* With the default origin ``(0, 0)`` the canvas has exactly the pixel grid of the object and the scan
  positions: canvas pixel ``(0, 0)`` is the top-left object pixel, and a patch centred at position
  ``(x, y)`` lands with its centre pixel ``(N//2, N//2)`` on object point ``(row=y, col=x)``. No recentring
  on the scan's centre of mass, no flip, no transpose: ``canvas[y, x]`` is the reconstruction of object
  pixel ``(y, x)``, so it can be compared with a ground-truth object pixel for pixel.

Only the central ``window x window`` region of each ``N x N`` patch is used (the border of a predicted
patch is unreliable): patch rows/cols ``N//2 - window//2 ... N//2 - window//2 + window - 1``. That
keeps the cropped window's own centre pixel ``window//2`` on the scan position, for odd and even sizes.

Sub-pixel placement is exact (no interpolation blur): each position, relative to the canvas origin, is
split by :func:`~ptychopinn.physics.shift.split_positions` into the nearest integer pixel
``round(pos)`` and a fraction in ``[-0.5, 0.5)``. The whole ``N x N`` patch is moved by that fraction
with a Fourier phase ramp (:func:`shifted_windows`: every spatial frequency kept; the patch is mirrored
before the shift, so its periodic continuation has no jump and what leaks in from the patch border
stays far below the window), its central window is cropped and added onto the canvas at the integer
position. Patches at integer positions are not
resampled at all. A window of weights is added at the same integer position onto a coverage canvas; the
result is ``sum(windows) / coverage``, the coverage-weighted average of all overlapping windows. Pixels
no window reached are 0.

Memory is the two canvases (plus a bounded buffer of ``flush_size`` shifted windows):
:class:`Stitcher` accumulates batch by batch, so the number of patches it can stitch is unbounded. A canvas
larger than the memory limit (:func:`check_canvas_memory`, :mod:`ptychopinn.limits`) is refused before it is
allocated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ptychopinn.config_fields import is_int
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.physics.shift import split_positions
from ptychopinn.runtime import resolve_device

__all__ = ["CANVAS_BYTES_PER_PIXEL", "Stitcher", "canvas_geometry", "centred_geometry", "check_canvas_memory",
           "crop_window", "shifted_windows", "stitch_patches"]

CANVAS_BYTES_PER_PIXEL = 24
"""Memory per canvas pixel: the complex64 sum and float32 coverage canvases, then the complex64 object and the
float32 coverage returned by :meth:`Stitcher.result`."""


def check_canvas_memory(shape: tuple[float, float], *, bytes_per_pixel: int = CANVAS_BYTES_PER_PIXEL,
                        what: str = "the stitching canvas") -> None:
    """Refuse a canvas of ``shape`` ``(H, W)`` pixels whose memory (``bytes_per_pixel`` each) exceeds
    :func:`ptychopinn.limits.memory_limit` (:class:`DataFormatError`); two scan positions far apart, or in metres
    instead of pixels, would otherwise allocate gigabytes before anything can go wrong."""
    from ptychopinn.limits import check_memory

    h, w = float(shape[0]), float(shape[1])
    check_memory(h * w * bytes_per_pixel, f"{what} of {w:.0f} x {h:.0f} pixels",
                 "check the scan positions are in object pixels (not metres or nanometres) and belong to "
                 "one scan", DataFormatError)
_STITCH_BATCH = 2048  # patches per Stitcher.add call in stitch_patches: bounds the temporaries
_SHIFT_CHUNK = 128  # patches per sub-pixel shift step: the per-patch shift matrices stay in cache


def _check_window(window: int, n: int | None = None) -> int:
    if not is_int(window) or window < 1:
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


def _shift_rows(n: int, start: int, window: int, shifts: torch.Tensor) -> torch.Tensor:
    """Rows ``start ... start + window - 1`` of the 1-D sub-pixel shift operators of :func:`shifted_windows`.

    ``shifts``: ``[P]`` float64 pixels in ``[-0.5, 0.5]`` (0 gives identity rows). Returns ``[P, window, n]``
    float32 matrices ``A`` with ``A @ v == (ifft(fft(e) * ramp))[start:start + window]``, where ``e``
    (length ``L = 2n``) is ``v`` followed by ``v`` reversed (half-sample symmetric extension) and ``ramp``
    is :func:`~ptychopinn.physics.shift.shift_ramp`'s factor moving content by ``+shift`` on ``L`` samples.

    With the shift kernel ``k = ifft(ramp)``, ``A[j, m] = k[j - m] + k[j + m + 1]`` (indices mod L), and
    summing the geometric series over ``fftfreq(L)`` (Nyquist bin at -1/2) gives
    ``k[d] = -(-1)**d sin(pi s) / L * (cot(pi (d - s) / L) - i)``. As ``(-1)**(j+m+1) = -(-1)**(j-m)``, the
    imaginary parts cancel and
    ``A[j, m] = -(-1)**(j-m) sin(pi s) / L * (cot(pi (j-m-s) / L) - cot(pi (j+m+1-s) / L))``:
    a real Toeplitz-minus-Hankel matrix, built from two vectors of ``n + window - 1`` values per patch.
    """
    length, span = 2 * n, n + window - 1
    dev = shifts.device
    s = shifts.to(torch.float64)[:, None]
    still = s == 0  # no shift on this axis: the identity rows (the formula is 0 * inf there)
    s = torch.where(still, torch.full_like(s, 0.25), s)
    d = torch.arange(start - n + 1, start + window, dtype=torch.float64, device=dev)  # the values of j - m
    e = torch.arange(start + 1, start + window + n, dtype=torch.float64, device=dev)  # the values of j + m + 1
    c = -torch.sin(math.pi * s) / length
    toeplitz = c * (1.0 - 2.0 * d.remainder(2)) / torch.tan(math.pi * (d - s) / length)  # (-1)**d
    hankel = c * (2.0 * e.remainder(2) - 1.0) / torch.tan(math.pi * (e - s) / length)  # (-1)**(e - 1)
    toeplitz = torch.where(still, (d == 0).to(torch.float64), toeplitz).to(torch.float32)
    hankel = torch.where(still, torch.zeros_like(hankel), hankel).to(torch.float32)
    p = s.shape[0]
    # toeplitz[a + n - 1 - m] is a Hankel view with its columns reversed; hankel[a + m] is a Hankel view
    return (toeplitz.as_strided((p, window, n), (span, 1, 1)).flip(-1)
            - hankel.as_strided((p, window, n), (span, 1, 1)))


def shifted_windows(patches: torch.Tensor, fractions: torch.Tensor, window: int) -> torch.Tensor:
    """Central ``window x window`` region of every ``[P, N, N]`` patch after moving the WHOLE patch by its
    sub-pixel ``fractions`` (``[P, 2]`` (dx, dy) px in ``[-0.5, 0.5]``, any float dtype) with a Fourier phase
    ramp.

    The patch is first extended half-sample symmetrically to ``2N x 2N`` (mirrored copies, like a DCT), then
    moved with :func:`~ptychopinn.physics.shift.fourier_shift` and cropped: exactly
    ``crop_window(fourier_shift(mirror(patches), fractions)[:, :N, :N], window)``. The mirror makes the
    periodic continuation continuous: a plain circular shift of a (never periodic) patch rings from the
    jump between its opposite edges with an amplitude falling off only as 1 / distance (about 1 % of that
    jump in the window of a 64-pixel patch), the mirrored one as 1 / distance**2 (measured: README, section
    "Physics and conventions"). The mirrored shift is a real linear operator, applied
    as two small real matrix products per patch (:func:`_shift_rows`: the window rows of the y shift, the
    window columns of the x shift), not 2-D FFTs: same numbers, several times faster on a CPU. Patches
    whose fraction is zero are cropped without resampling.

    Returns a new ``[P, window, window]`` complex64 tensor (never a view of ``patches``).
    """
    n = int(patches.shape[-1])
    start = n // 2 - window // 2
    src = patches.to(torch.complex64)
    out = crop_window(src, window).clone()
    frac = fractions.to(device=src.device, dtype=torch.float64)
    moving = torch.nonzero((frac != 0).any(dim=1)).flatten()
    # Chunks keep the per-patch matrices in cache (large batches otherwise run at half speed).
    for s in range(0, int(moving.numel()), _SHIFT_CHUNK):
        idx = moving[s:s + _SHIFT_CHUNK]
        p = int(idx.numel())
        f = frac[idx]
        a = _shift_rows(n, start, window, torch.cat([f[:, 1], f[:, 0]]))
        a_y, a_x = a[:p], a[p:]  # [p, w, N]: window rows of the y shift / window columns of the x shift
        # y shift on real and imaginary parts at once ([N, 2N] interleaved), then the x shift on the
        # transposed result: [p, w(y), N] -> [p, N, w(y)] -> [p, w(x), w(y)]
        q = a_y @ torch.view_as_real(src[idx]).reshape(p, n, 2 * n)
        q = torch.view_as_complex(q.reshape(p, window, n, 2)).transpose(1, 2).contiguous()
        o = a_x @ torch.view_as_real(q).reshape(p, n, 2 * window)
        out[idx] = torch.view_as_complex(o.reshape(p, window, window, 2)).transpose(1, 2)
    return out


class Stitcher:
    """Accumulates complex patches into one canvas batch by batch; memory = the canvas, independent of
    the number of patches.

    Args:
        shape: ``(H, W)`` canvas size in pixels.
        window: side in pixels of the central region of each patch that is placed.
        origin: ``(x0, y0)`` object pixel of canvas pixel ``(0, 0)`` (see the module docstring).
        device: torch device of the canvases (patches are moved there), or an accelerator name as in
            :func:`~ptychopinn.runtime.resolve_device`; default CPU.
        flush_size: shifted windows are buffered until this many are pending, then placed in one call:
            placement has a fixed cost per call, so small batches (64 patches per network batch) would
            otherwise run slower. The buffer holds ``flush_size * window**2`` complex values.
        taper: centre weighting of the windows (see :func:`_taper_weight`); 0 = plain average.
        sync: before averaging, multiply every window by the phase offset (and amplitude gain) that makes
            it agree with its overlapping neighbours (:mod:`ptychopinn.inference.phase_sync`). The
            offsets are solved for the whole scan at once, so every window is kept until
            :meth:`result` (memory ``P * window**2`` complex values instead of the canvas alone).
        sync_amplitude: with ``sync``, also solve amplitude gains (else phase offsets only).

    The canvases are ``[1, H, W]`` complex64 (sum of windows) and ``[1, H, W]`` float32 (coverage).
    """

    def __init__(self, shape: tuple[int, int], window: int, *, origin: tuple[float, float] = (0.0, 0.0),
                 device: torch.device | str | None = None, flush_size: int = 1024, taper: float = 0.0,
                 sync: bool = False, sync_amplitude: bool = True) -> None:
        if len(shape) != 2 or not all(is_int(s) for s in shape) or min(shape) < 1:
            raise ConfigError(f"canvas shape: expected (H, W) positive integers, found {shape!r}; "
                              f"use canvas_geometry() to compute it")
        if len(origin) != 2 or not all(math.isfinite(float(o)) for o in origin):
            raise ConfigError(f"canvas origin: expected finite (x0, y0) pixels, found {origin!r}; "
                              f"use canvas_geometry() to compute it")
        self.shape = (int(shape[0]), int(shape[1]))
        check_canvas_memory(self.shape)
        self.window = _check_window(window)
        self.origin = (float(origin[0]), float(origin[1]))
        self.device = resolve_device("cpu" if device is None else device)
        if not is_int(flush_size) or flush_size < 1:
            raise ConfigError(f"flush_size: expected a positive integer, found {flush_size!r}; use 1024")
        self.flush_size = int(flush_size)
        self.n_patches = 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._n_pending = 0
        self._sum = torch.zeros((1, *self.shape), dtype=torch.complex64, device=self.device)
        self._cov = torch.zeros((1, *self.shape), dtype=torch.float32, device=self.device)
        if not (isinstance(taper, (int, float)) and math.isfinite(taper) and taper >= 0):
            raise ConfigError(f"taper: expected a finite number >= 0, found {taper!r}; use 0 for uniform weights")
        self.weight = _taper_weight(self.window, float(taper)).to(self.device)
        self._ones: torch.Tensor | None = None  # cached [P, w, w] weights, regrown when a batch is larger
        self.sync = bool(sync)
        self.sync_amplitude = bool(sync_amplitude)
        self.gains: np.ndarray | None = None  # [P] complex128 after a synchronised result()

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
        # Canvas coordinates in float64 (large object coordinates keep their sub-pixel detail), split into
        # the integer window corner and the fraction the whole patch is moved by (exact Fourier shift).
        corner, frac = split_positions(pos - np.asarray(self.origin), self.window)
        # shifted_windows returns a new tensor: nothing aliases the caller's (possibly reused) patch batch.
        src = t.to(device=self.device, dtype=torch.complex64)
        win = shifted_windows(src, torch.from_numpy(frac).to(self.device), self.window)
        self._pending.append((win, torch.from_numpy(corner).to(self.device)))
        self._n_pending += p
        self.n_patches += p
        if self._n_pending >= self.flush_size and not self.sync:
            self._flush()

    def _flush(self) -> None:
        """Add every pending window onto the canvases at its integer corner (values and weights)."""
        if not self._pending:
            return
        win = torch.cat([w for w, _ in self._pending])
        corner = torch.cat([c for _, c in self._pending])
        self._pending.clear()
        self._n_pending = 0
        if not self.sync:
            self._place(win, corner)
            return
        from ptychopinn.inference.phase_sync import synchronize

        self.gains = synchronize(win, corner.cpu().numpy(), amplitude=self.sync_amplitude)
        gains = torch.from_numpy(self.gains.astype(np.complex64)).to(self.device)
        # placed in chunks: the index and weight temporaries of all windows at once would be several times
        # the size of the windows themselves
        for s in range(0, int(win.shape[0]), self.flush_size):
            self._place(win[s:s + self.flush_size] * gains[s:s + self.flush_size, None, None],
                        corner[s:s + self.flush_size])

    def _place(self, win: torch.Tensor, corner: torch.Tensor) -> None:
        """Add windows ``[p, w, w]`` complex64 at integer canvas corners ``[p, 2]`` (col, row), weighted."""
        win = win * self.weight
        p, w = int(win.shape[0]), self.window
        h_c, w_c = self.shape
        span = torch.arange(w, device=self.device)
        rows = corner[:, 1, None] + span  # [P, w]
        cols = corner[:, 0, None] + span
        flat = (rows.clamp(0, h_c - 1)[:, :, None] * w_c + cols.clamp(0, w_c - 1)[:, None, :]).reshape(-1)
        if self._ones is None or self._ones.shape[0] < p:
            self._ones = self.weight.expand(p, w, w).contiguous()
        weights = self._ones[:p]
        inside = bool((rows.min() >= 0) & (rows.max() < h_c) & (cols.min() >= 0) & (cols.max() < w_c))
        if not inside:  # drop what falls outside the canvas (clamped indices get zero values)
            valid = (((rows >= 0) & (rows < h_c))[:, :, None] & ((cols >= 0) & (cols < w_c))[:, None, :])
            win = win * valid
            weights = weights * valid
        self._sum.view(-1).index_add_(0, flat, win.reshape(-1))
        self._cov.view(-1).index_add_(0, flat, weights.reshape(-1))

    def result(self, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """Coverage-normalised average of everything added so far.

        Returns:
            ``(obj, coverage)``: ``obj`` ``[H, W]`` complex64, the average of the overlapping windows
            (0 where coverage <= eps); ``coverage`` ``[H, W]`` float32, the summed window weights, i.e. how
            many windows cover each pixel (with a taper, weighted counts >= that number).
        """
        self._flush()
        return self._average(eps)

    def unsynchronised_result(self, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`result` would give without synchronisation: the windows added so far averaged as they
        are, on fresh canvases (the stitcher's own state is unchanged; call it before :meth:`result`). The
        same as :meth:`result` for a stitcher that does not synchronise."""
        if not self.sync:
            return self.result(eps)
        saved = self._sum, self._cov
        self._sum, self._cov = torch.zeros_like(saved[0]), torch.zeros_like(saved[1])
        try:
            for win, corner in self._pending:
                for s in range(0, int(win.shape[0]), self.flush_size):
                    self._place(win[s:s + self.flush_size], corner[s:s + self.flush_size])
            return self._average(eps)
        finally:
            self._sum, self._cov = saved

    def _average(self, eps: float) -> tuple[np.ndarray, np.ndarray]:
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


def _window_extent(pos: np.ndarray, window: int, origin: Sequence[float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest canvas pixel (x, y) any window touches, ``[2]`` int64 each, for a canvas whose
    pixel (0, 0) is object point ``origin``.

    A window lands at the nearest integer pixel ``c = round(pos - origin)`` (see
    :func:`~ptychopinn.physics.shift.split_positions`) and covers columns ``c - w//2 ... c - w//2 + w - 1``.
    """
    corner, _ = split_positions(pos - np.asarray(origin, dtype=np.float64), window)
    return corner.min(axis=0), corner.max(axis=0) + window - 1


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
        if len(object_shape) != 2 or not all(is_int(s) for s in object_shape) or min(object_shape) < 1:
            raise ConfigError(f"object_shape: expected (H, W) positive integers, found {object_shape!r}; "
                              f"pass obj.shape")
        return (int(object_shape[0]), int(object_shape[1])), (0.0, 0.0)
    pos = _positions_array(positions)
    if pos.shape[0] == 0:
        raise DataFormatError("positions: expected at least one scan position, found none; check the scan")
    lo, hi = _window_extent(pos, window)
    origin = np.minimum(lo, 0)
    size = hi - origin + 1
    check_canvas_memory((int(size[1]), int(size[0])))
    return (int(size[1]), int(size[0])), (float(origin[0]), float(origin[1]))


def centred_geometry(
    positions: torch.Tensor | np.ndarray, window: int, centre: Sequence[float] | None = None,
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Canvas ``shape`` and ``origin`` whose centre pixel ``((H-1)/2, (W-1)/2)`` is exactly object point
    ``centre`` and which holds every stitched window.

    For hosts that label a canvas by its centre (ptychodus puts the object centre on pixel ``(W-1)/2``).
    The origin is then usually fractional: canvas pixel ``(row, col)`` is object point
    ``(y0 + row, x0 + col)``, sampled exactly (placement shifts each patch by the whole sub-pixel offset).

    Args:
        positions: ``[M, 2]`` (x, y) object pixels where the windows are centred (patch pixel ``N//2``).
        window: stitch window side in pixels.
        centre: ``(x, y)`` object point for the canvas centre; default: the midpoint of the positions'
            bounding box (the centre ptychodus gives the objects it sizes for a scan).

    Returns:
        ``((H, W), (x0, y0))`` with odd ``H`` and ``W``.
    """
    _check_window(window)
    pos = _positions_array(positions)
    if pos.shape[0] == 0:
        raise DataFormatError("positions: expected at least one scan position, found none; check the scan")
    c = 0.5 * (pos.min(axis=0) + pos.max(axis=0)) if centre is None else np.asarray(centre, dtype=np.float64)
    if c.shape != (2,) or not np.isfinite(c).all():
        raise ConfigError(f"centre: expected a finite (x, y) point in object pixels, found {centre!r}")
    # round(pos - origin) +- window/2 must stay inside [0, 2 * half]
    half = np.ceil(np.abs(pos - c).max(axis=0) + window // 2 + 1).astype(np.int64)
    size = 2 * half + 1
    check_canvas_memory((int(size[1]), int(size[0])))
    origin = c - half
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
            _, hi = _window_extent(pos, window, (float(origin[0]), float(origin[1])))
            shape = (max(1, int(hi[1]) + 1), max(1, int(hi[0]) + 1))
    st = Stitcher(shape, window, origin=(0.0, 0.0) if origin is None else (origin[0], origin[1]),
                  device=t.device)
    for start in range(0, t.shape[0], _STITCH_BATCH):
        st.add(t[start:start + _STITCH_BATCH], pos[start:start + _STITCH_BATCH])
    return st.result()
