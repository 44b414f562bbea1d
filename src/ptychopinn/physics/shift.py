"""Exact sub-pixel geometry: integer windows plus Fourier shifts (no interpolation blur).

A patch of side ``N`` centred at position ``(x, y)`` (object pixels, x = column) has its pixel
``(N//2, N//2)`` on that point. :func:`split_positions` splits every position into the integer
top-left corner of the ``N x N`` object window nearest to it and the remaining fractional offset
in ``[-0.5, 0.5)``; :func:`fourier_shift` moves image content by such a fraction with a phase ramp,
which keeps every spatial frequency up to Nyquist (bilinear interpolation attenuates the highest ones
by up to 50 %). The shift is circular over the last two axes and unitary, so shifting by ``-f`` is
its exact adjoint and inverse.

Both stitching (placing a predicted patch on the object canvas) and refinement (illuminating an
integer object window with a shifted probe) use these two helpers, so they agree to the pixel.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["extract_exact", "fourier_derivatives", "fourier_shift", "shift_ramp", "shifted_copies", "split_positions",
           "window_index"]


def split_positions(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer window corners and fractional offsets of patch centres.

    Args:
        positions: ``[P, 2]`` float64 ``(x, y)`` object pixels of patch centres.
        n: patch side ``N`` (the window is ``N x N``; its pixel ``N//2`` sits on the position).

    Returns:
        ``(corner [P, 2] int64 (col, row) of window pixel (0, 0), frac [P, 2] float64 (dx, dy))`` with
        ``positions == corner + N//2 + frac`` and ``frac`` in ``[-0.5, 0.5)``.
    """
    pos = np.asarray(positions, dtype=np.float64)
    centre = np.floor(pos + 0.5)
    return (centre - n // 2).astype(np.int64), pos - centre


def shift_ramp(shape: tuple[int, int], shifts: torch.Tensor, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Fourier-domain factors that move content by ``shifts`` under an unshifted ``fft2``.

    Args:
        shape: ``(H, W)`` of the images.
        shifts: ``[P, 2]`` ``(dx, dy)`` pixels (any float dtype; computed in float64).
        dtype: complex dtype of the result.

    Returns:
        ``[P, H, W]`` complex: ``ifft2(fft2(img) * ramp)`` is ``img`` moved by ``+shift``.
    """
    h, w = shape
    dev = shifts.device
    s = shifts.to(torch.float64)
    ky = torch.fft.fftfreq(h, device=dev, dtype=torch.float64)
    kx = torch.fft.fftfreq(w, device=dev, dtype=torch.float64)
    phase = (-2.0 * math.pi) * (s[:, 1, None, None] * ky[None, :, None] + s[:, 0, None, None] * kx[None, None, :])
    return torch.polar(torch.ones_like(phase), phase).to(dtype)


def fourier_shift(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Move image content by ``+shift`` exactly (circularly): ``out(p) = in(p - shift)``.

    Args:
        images: ``[P, H, W]`` complex (real is promoted to complex64).
        shifts: ``[P, 2]`` ``(dx, dy)`` pixels; a zero shift returns the input values unchanged
            up to FFT round-off.

    Returns:
        ``[P, H, W]`` complex, same precision as ``images``. Unitary: the adjoint of a shift by ``f``
        is the shift by ``-f``.
    """
    x = images if images.is_complex() else images.to(torch.complex64)
    ramp = shift_ramp((int(x.shape[-2]), int(x.shape[-1])), shifts.to(x.device), x.dtype)
    return torch.fft.ifft2(torch.fft.fft2(x) * ramp)


def shifted_copies(image: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Copies of one image moved by each of ``shifts`` (as :func:`fourier_shift`, one forward FFT).

    Args:
        image: ``[H, W]`` complex (e.g. a probe).
        shifts: ``[P, 2]`` ``(dx, dy)`` pixels.

    Returns:
        ``[P, H, W]`` complex, dtype of ``image``.
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    return torch.fft.ifft2(torch.fft.fft2(image)[None] * shift_ramp((h, w), shifts.to(image.device), image.dtype))


def fourier_derivatives(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (spectral) derivatives ``(d/dx, d/dy)`` of band-limited periodic images.

    ``images``: ``[P, H, W]`` complex. Returns two ``[P, H, W]`` complex tensors in units of the image per
    pixel (x = column): the rate at which :func:`fourier_shift` by ``+dx`` changes the image is
    ``-d/dx``.
    """
    h, w = int(images.shape[-2]), int(images.shape[-1])
    spec = torch.fft.fft2(images)
    real = images.real.dtype
    kx = torch.fft.fftfreq(w, device=images.device, dtype=real) * (2j * math.pi)
    ky = torch.fft.fftfreq(h, device=images.device, dtype=real) * (2j * math.pi)
    return torch.fft.ifft2(spec * kx[None, None, :]), torch.fft.ifft2(spec * ky[None, :, None])


def window_index(corner: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Flat indices ``[P, n, n]`` int64 of ``n x n`` windows with top-left ``corner`` ``[P, 2]`` (col, row)
    in a row-major image of ``width`` columns (the caller keeps the windows inside the image)."""
    ar = torch.arange(n, device=corner.device)
    rows = corner[:, 1, None] + ar
    cols = corner[:, 0, None] + ar
    return rows[:, :, None] * width + cols[:, None, :]


def extract_exact(image: torch.Tensor, positions: np.ndarray, n: int) -> torch.Tensor:
    """Object patches centred at sub-pixel positions, cut without interpolation blur.

    Each patch is the integer ``n x n`` window nearest to its position moved by the remaining
    fraction with :func:`fourier_shift` (circularly, so about one border pixel carries wrapped
    content). This is the object patch in the probe's frame, what the network predicts and what
    :func:`~ptychopinn.simulate.simulate_diffraction` illuminates. (Refinement instead keeps the
    object window at integer pixels and shifts the smooth probe; the two agree up to the aliasing of
    a fractionally shifted product.)

    Args:
        image: ``[H, W]`` complex object; every window must lie inside it.
        positions: ``[P, 2]`` float64 (x, y) object pixels of the patch centres.
        n: patch side.

    Returns:
        ``[P, n, n]`` complex patches (dtype of ``image``, promoted to complex).

    Raises:
        IndexError: a window reaches outside the image.
    """
    corner, frac = split_positions(positions, n)
    h, w = int(image.shape[-2]), int(image.shape[-1])
    if corner.size and (corner.min() < 0 or corner[:, 0].max() + n > w or corner[:, 1].max() + n > h):
        raise IndexError(f"a {n}x{n} window at the given positions reaches outside the {h}x{w} image")
    idx = window_index(torch.from_numpy(corner).to(image.device), n, w)
    windows = image.reshape(-1)[idx]
    return fourier_shift(windows, -torch.from_numpy(frac).to(image.device))
