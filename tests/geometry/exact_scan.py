"""Exact synthetic scans for geometry tests (imported as ``exact_scan``): a band-limited periodic complex
object, jittered sub-pixel scan positions and the TRUE object patches cut at those positions by Fourier
shifting the whole object (exact for a band-limited periodic object), in either patch-centre convention.

Conventions: a position ``(x, y)`` is in object pixels (x = column, y = row). ``centre`` is the patch pixel
that lies on the position: ``N // 2`` (ptychopinn, upstream PtychoPINN) or ``(N - 1) / 2`` (ptychodus), so
patch pixel ``(r, k)`` is object point ``(y - centre + r, x - centre + k)``.
"""

from __future__ import annotations

import numpy as np
import torch

from ptychopinn.physics.shift import fourier_shift


def smooth_object(size: int | tuple[int, int], cutoff: float = 0.2, seed: int = 0) -> np.ndarray:
    """``[H, W]`` complex128 periodic object band-limited to ``|f| < cutoff`` cycles/pixel.

    Amplitude about 0.4 .. 1, phase about +-1.5 rad with random texture, then low-passed as a complex field,
    so it is exactly band-limited (no content at Nyquist): any sub-pixel shift of it is exact.
    """
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    mask = np.hypot(fx, fy) < cutoff

    def field() -> np.ndarray:
        f = np.fft.ifft2(np.fft.fft2(rng.standard_normal((h, w))) * mask).real
        return f / np.abs(f).max()

    obj = (0.7 + 0.3 * field()) * np.exp(1.5j * field())
    return np.fft.ifft2(np.fft.fft2(obj) * mask)


def jittered_raster(origin: float, step: float, n: int, jitter: float = 1.0, seed: int = 1) -> np.ndarray:
    """``[n*n, 2]`` float64 (x, y): a square raster ``origin + step * i`` moved by uniform +-``jitter`` px."""
    xs, ys = np.meshgrid(origin + step * np.arange(n), origin + step * np.arange(n))
    pos = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    return pos + np.random.default_rng(seed).uniform(-jitter, jitter, pos.shape)


def true_patches(obj: np.ndarray, positions: np.ndarray, n: int, centre: float | None = None,
                 batch: int = 64) -> np.ndarray:
    """``[P, n, n]`` complex64 exact patches of ``obj`` centred at ``positions`` (see the module docstring).

    ``centre`` defaults to ``n // 2``. Each patch is cut from the whole periodic object moved by minus the
    fractional part of its top-left corner (Fourier shift), so it samples the object exactly.
    """
    c = float(n // 2 if centre is None else centre)
    top_left = np.asarray(positions, dtype=np.float64) - c  # (x, y) object point under patch pixel (0, 0)
    corner = np.floor(top_left).astype(np.int64)
    frac = top_left - corner
    h, w = obj.shape
    base = torch.from_numpy(np.asarray(obj, dtype=np.complex128))
    rows = np.arange(n)
    out = np.empty((len(positions), n, n), np.complex64)
    for s in range(0, len(positions), batch):
        sl = slice(s, s + batch)
        shifted = fourier_shift(base.expand(len(frac[sl]), h, w), torch.from_numpy(-frac[sl])).numpy()
        for i, (x0, y0) in enumerate(corner[sl]):
            out[s + i] = shifted[i][np.ix_((y0 + rows) % h, (x0 + rows) % w)]
    return out


def encode_index(n_points: int, n: int) -> np.ndarray:
    """``[M, n, n]`` float32 stand-in diffraction amplitudes that encode their own scan index.

    Pixel ``[0, 0]`` is 1.5 and pixel ``[0, 1]`` is ``1.5 * (index + 0.25)``; the values are not integers, so
    unit detection keeps them as amplitudes, and every normalisation (a common factor) keeps the ratio.
    """
    d = np.zeros((n_points, n, n), np.float32)
    d[:, 0, 0] = 1.5
    d[:, 0, 1] = 1.5 * (np.arange(n_points) + 0.25)
    d[:, n // 2, n // 2] = 2.5
    return d


def decode_index(x: torch.Tensor) -> torch.Tensor:
    """Scan indices ``[...]`` int64 from inputs ``[..., n, n]`` made by :func:`encode_index` (any scale)."""
    return (x[..., 0, 1].double() / x[..., 0, 0].double() - 0.25).round().long()
