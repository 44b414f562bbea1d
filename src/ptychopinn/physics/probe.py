"""Probe helpers: normalisation, the central support mask and complex Gaussian smoothing.

Probe normalisation fixes the scale ambiguity between object and probe. The illuminating probe is
rescaled to total energy ``sum |P|**2 == (probe_scale * N / 4)**2``. Network inputs are
normalised so that a pattern carries on average ``(N/2)**2`` of energy (see
:mod:`ptychopinn.data.normalize`), so by Parseval a fully transmitting object explains the data
at amplitude ``2 / probe_scale`` (0.5 for the default ``probe_scale = 4``): reconstructed amplitudes
are relative to the mean transmission of the scanned region and sit well inside the range of
every amplitude activation.
"""

from __future__ import annotations

import math

import torch

from ptychopinn.errors import DataFormatError


def normalize_probe(probe: torch.Tensor, probe_scale: float = 4.0) -> torch.Tensor:
    """Rescale a probe to total energy ``(probe_scale * N / 4)**2``.

    ``probe``: ``[N, N]`` complex64. Returns ``[N, N]`` complex64 (same phase, new scale).
    Raises :class:`~ptychopinn.errors.DataFormatError` for an all-zero or non-finite probe.
    """
    n = probe.shape[-1]
    # float64: a probe of tiny (1e-30) or huge (1e30) float32 amplitudes has a representable energy there
    energy = probe.to(torch.complex128).abs().pow(2).sum()
    if not torch.isfinite(energy) or energy <= 0:
        found = "NaN/Inf values" if not bool(torch.isfinite(torch.view_as_real(probe)).all()) else \
            f"total energy {float(energy):.3g}"
        raise DataFormatError(f"probe: expected a finite [N, N] complex probe with non-zero amplitude, found "
                              f"{found}; pass the measured or reconstructed probe (e.g. NPZ key 'probeGuess')")
    target = probe_scale * n / 4.0
    return (probe * (target / energy.sqrt())).to(torch.complex64)


def central_disk(n: int, radius: float | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Hard disk mask ``[n, n]`` float32 of radius ``n/4`` (default) centred on pixel ``(n//2, n//2)``."""
    r = n / 4.0 if radius is None else radius
    ax = torch.arange(n, dtype=torch.float32, device=device) - n // 2
    rr = ax[:, None] ** 2 + ax[None, :] ** 2
    return (rr <= r * r).to(torch.float32)


def central_window(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Square window ``[n, n]`` float32: 1 on the central ``n/2 x n/2`` pixels, 0 elsewhere."""
    w = torch.zeros(n, n, dtype=torch.float32, device=device)
    w[n // 4: n // 4 + n // 2, n // 4: n // 4 + n // 2] = 1.0
    return w


def gaussian_kernel1d(sigma: float, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel ``[2k+1]`` (float32 by default) with ``k = ceil(3 sigma)``."""
    k = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-k, k + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def gaussian_smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of the real and imaginary parts (zero padding).

    ``field``: ``[..., H, W]`` complex. Returns the same shape and dtype. ``sigma`` in pixels;
    ``sigma <= 0`` returns the input unchanged.
    """
    if sigma <= 0:
        return field
    g = gaussian_kernel1d(sigma, field.device, field.real.dtype)  # conv2d needs matching dtypes
    k = g.numel()
    shape = field.shape
    parts = torch.view_as_real(field).movedim(-1, -3).reshape(-1, 1, shape[-2], shape[-1])
    parts = torch.nn.functional.conv2d(parts, g.view(1, 1, 1, k), padding=(0, k // 2))
    parts = torch.nn.functional.conv2d(parts, g.view(1, 1, k, 1), padding=(k // 2, 0))
    parts = parts.reshape(*shape[:-2], 2, shape[-2], shape[-1]).movedim(-3, -1).contiguous()
    return torch.view_as_complex(parts)


def crop_far_field(probe: torch.Tensor, row0: int, col0: int, n: int) -> torch.Tensor:
    """The probe on the object grid of an ``n x n`` window of the detector: its far field cut to that window.

    Cutting the detector from ``N`` to ``n`` pixels makes the object pixels ``N / n`` times larger (the object
    pixel is ``wavelength * distance / (pixels * detector pitch)``). The probe that belongs to the cropped
    patterns is the one whose far field is the same window of the original's: ``ifft2c(window(fft2c(P)))``.
    For a transmitting object its pattern ``|fft2c(P')|**2`` is then exactly the window of ``|fft2c(P)|**2``,
    and ``sum |P'|**2`` is the far-field energy inside the window. A window off the frame's centre moves the
    zero frequency of the cropped frame: the resampled probe carries the matching phase ramp.

    Args:
        probe: ``[ny, nx]`` complex probe on the object grid of the full frames.
        row0, col0: top-left detector pixel of the window in the centred far field (zero frequency at
            ``(ny//2, nx//2)``, the frame convention of the patterns).
        n: window side in pixels (the window must lie inside the frame).

    Returns:
        ``[n, n]`` complex64 probe on the object grid of the cropped patterns.
    """
    from ptychopinn.physics.fft import fft2c, ifft2c

    ny, nx = int(probe.shape[-2]), int(probe.shape[-1])
    if not (0 <= row0 and 0 <= col0 and row0 + n <= ny and col0 + n <= nx):
        raise DataFormatError(f"probe far-field window: expected rows {row0}..{row0 + n - 1} and columns "
                              f"{col0}..{col0 + n - 1} inside the {ny} x {nx} probe; choose a window inside it")
    far = fft2c(probe.to(torch.complex64))
    return ifft2c(far[..., row0:row0 + n, col0:col0 + n].contiguous()).to(torch.complex64)
