"""Fourier ring correlation (FRC) and its resolution thresholds (0.5 and 1/2-bit).

Spectral frequencies in cycles/pixel; resolutions in pixels (1/frequency at the first crossing).
Numpy only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ptychopinn.errors import DataFormatError, describe_array

_TUKEY_ALPHA = 0.5  # fraction of each axis tapered by the window used for registration and FRC


def tukey_window_2d(shape: tuple[int, int], alpha: float = _TUKEY_ALPHA) -> np.ndarray:
    """Separable Tukey window ``[H, W]`` float64 in [0, 1]; ``alpha`` = tapered fraction (0 flat, 1 Hann).

    Stops non-periodic image edges from dominating Fourier-domain correlations.
    """

    def taper(n: int) -> np.ndarray:
        # Cosine ramps over alpha/2 of the axis at each end (same as scipy.signal.windows.tukey, whose
        # import alone costs ~1 s).
        if n < 2 or alpha <= 0.0:
            return np.ones(n)
        u = np.arange(n) / (n - 1)
        edge = np.minimum(u, 1.0 - u) / (alpha / 2.0)
        return np.where(edge < 1.0, 0.5 * (1.0 - np.cos(np.pi * np.minimum(edge, 1.0))), 1.0)

    return np.outer(taper(shape[0]), taper(shape[1]))


def _ring_index(side: int) -> np.ndarray:
    """Rounded radius of every pixel of an fftshifted ``[side, side]`` spectrum, int64."""
    k = np.arange(side) - side // 2
    return np.rint(np.hypot(k[:, None], k[None, :])).astype(np.int64)


def ring_pixel_counts(side: int) -> np.ndarray:
    """Number of Fourier pixels in rings ``r = 0 .. side//2`` of a ``[side, side]`` image; ``[R]`` int64."""
    return np.bincount(_ring_index(side).ravel(), minlength=side // 2 + 1)[: side // 2 + 1]


def half_bit_threshold(n_pixels_per_ring: np.ndarray) -> np.ndarray:
    """Half-bit threshold ``(0.2071 + 1.9102/sqrt(n)) / (1.2071 + 0.9102/sqrt(n))``; ``[R]`` float64."""
    inv = 1.0 / np.sqrt(np.maximum(np.asarray(n_pixels_per_ring, dtype=np.float64), 1.0))
    return (0.2071 + 1.9102 * inv) / (1.2071 + 0.9102 * inv)


def frc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two real images.

    Both are centre-cropped to the largest common square, mean-subtracted and multiplied by a Tukey
    window (alpha 0.5, :func:`tukey_window_2d`) so the non-periodic edges add no spurious correlated
    cross to the spectra. ``FRC(r) = |sum F1 F2*| / sqrt(sum |F1|^2 sum |F2|^2)`` over ring ``r``
    (rounded distance from zero frequency); a ring where either image has no power gets 0.

    ``a``, ``b``: ``[H, W]`` real arrays of one shape (any units), sides >= 2. Returns ``(freq, curve)``,
    both ``[R]`` float64 for ``r = 0 .. side//2``: ``freq = r/side`` cycles/pixel, ``curve`` in [0, 1].
    """
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim != 2 or x.shape != y.shape or np.iscomplexobj(x) or np.iscomplexobj(y) or min(x.shape) < 2:
        raise DataFormatError(
            f"frc: expected two real 2-D images of one shape (sides >= 2), found {describe_array(x)} and "
            f"{describe_array(y)}; pass amplitudes or phases, not complex fields"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DataFormatError("frc: expected finite values, found NaN/inf; clean the images first")
    side = min(x.shape)
    r0, c0 = (x.shape[0] - side) // 2, (x.shape[1] - side) // 2
    x = x[r0 : r0 + side, c0 : c0 + side].astype(np.float64)
    y = y[r0 : r0 + side, c0 : c0 + side].astype(np.float64)
    win = tukey_window_2d((side, side))
    f1 = np.fft.fftshift(np.fft.fft2((x - x.mean()) * win)).ravel()
    f2 = np.fft.fftshift(np.fft.fft2((y - y.mean()) * win)).ravel()
    n_r = side // 2 + 1
    rings = _ring_index(side).ravel()
    keep = rings < n_r  # the corners beyond the Nyquist ring are dropped
    idx, f1, f2 = rings[keep], f1[keep], f2[keep]
    cross = f1 * np.conj(f2)

    def ring_sum(v: np.ndarray) -> np.ndarray:
        return np.bincount(idx, weights=v, minlength=n_r)

    num = np.hypot(ring_sum(cross.real), ring_sum(cross.imag))
    denom = np.sqrt(ring_sum(np.abs(f1) ** 2) * ring_sum(np.abs(f2) ** 2))
    curve = np.divide(num, denom, out=np.zeros(n_r), where=denom > 0)
    return np.arange(n_r) / side, np.clip(curve, 0.0, 1.0)


def frc_resolution(
    freq: np.ndarray, curve: np.ndarray, n_pixels_per_ring: np.ndarray, threshold: Literal["0.5", "half-bit"]
) -> float:
    """Resolution in pixels where an FRC curve first falls below a threshold.

    The first ring ``r >= 1`` with ``curve[r] < T[r]`` is found (ring 0, the DC term, never counts) and the
    crossing frequency is linearly interpolated between rings ``r-1`` and ``r``; the result is
    ``1 / f_cross``, capped at the image side ``1/freq[1]`` when the curve fails at the lowest
    frequencies. A curve that never crosses gives ``1/freq[-1]`` (about 2 px, the Nyquist limit: every
    measurable frequency correlates). NaN curve values count as 0.

    ``freq``: ``[R]`` cycles/pixel (:func:`frc`); ``curve``: ``[R]`` FRC; ``n_pixels_per_ring``: ``[R]``
    (:func:`ring_pixel_counts`, for ``'half-bit'``); ``threshold``: ``'0.5'`` or ``'half-bit'`` (van Heel).
    """
    f, c = np.asarray(freq, dtype=np.float64), np.asarray(curve, dtype=np.float64)
    n = np.asarray(n_pixels_per_ring, dtype=np.float64)
    if f.ndim != 1 or f.shape != c.shape or f.shape != n.shape or f.size < 2 or f[1] <= 0:
        raise DataFormatError(
            f"frc_resolution: expected 1-D freq, curve and ring counts of one length >= 2 with freq[1] > 0, "
            f"found shapes {f.shape}, {c.shape}, {n.shape}; pass the outputs of frc() and ring_pixel_counts()"
        )
    if threshold not in ("0.5", "half-bit"):
        raise DataFormatError(
            f"frc_resolution: expected threshold '0.5' or 'half-bit', found {threshold!r}; use one of those"
        )
    thr = np.full_like(c, 0.5) if threshold == "0.5" else half_bit_threshold(n)
    side = 1.0 / f[1]
    d = np.nan_to_num(c, nan=0.0) - thr
    below = np.flatnonzero(d[1:] < 0)
    if below.size == 0:
        return float(1.0 / f[-1])
    r = int(below[0]) + 1
    hi, lo = d[r - 1], d[r]
    t = float(np.clip(hi / (hi - lo), 0.0, 1.0)) if hi > 0 else 0.0
    f_cross = f[r - 1] + t * (f[r] - f[r - 1])
    return float(side) if f_cross <= 0 else float(min(1.0 / f_cross, side))
