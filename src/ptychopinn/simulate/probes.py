"""Synthetic probes on the object pixel grid.

Every probe is ``[N, N]`` complex64, centred on pixel ``(N//2, N//2)`` (row, column), with peak
amplitude 1 (the absolute scale is irrelevant: the forward model renormalises the probe, see
:func:`ptychopinn.physics.probe.normalize_probe`).

* ``'focused'``: the far-field image of a circular aperture, i.e. a focused X-ray spot. The pupil
  is a disk in the Fourier plane of radius ``R = 1.22 * N / diameter`` frequency pixels, which puts
  the first Airy zero at radius ``0.61 * N / R = diameter / 2`` pixels: ``diameter`` is the
  diameter of the in-focus central spot. The pupil edge is a linear ramp two frequency pixels wide:
  a hard, pixelated edge gives slowly decaying tails that wrap around the N x N grid (periodic FFT)
  and show up as square ringing in the corners. A quadratic pupil phase ``defocus * (rho / R)**2``
  (radians; ``defocus = DEFAULT_DEFOCUS = pi/2``, a quarter wave of defocus at the pupil edge) gives
  the probe structure in both amplitude and phase while keeping the main lobe compact; a large
  ``defocus`` gives the wide ring-and-fringes probe of a zone plate out of focus (its geometric
  radius is ``N * defocus / (pi * R)`` pixels), and ``stop`` blocks the pupil's centre out to that
  fraction of its radius (a zone plate's central stop). At N = 64
  with the default diameter about 19 % of the energy lies in the side lobes (outside the in-focus
  first zero) and under 2 % outside the central N/2 x N/2 square. The probe is the centred inverse
  FFT of the pupil, with the convention of :mod:`ptychopinn.physics.fft` (zero frequency at index
  ``N//2``).
* ``'gaussian'``: the real Gaussian ``exp(-r**2 / (2 sigma**2))`` whose amplitude has full width at
  half maximum ``diameter`` pixels (``sigma = diameter / (2 sqrt(2 ln 2))``).

The default ``diameter`` is ``N / 4`` for both kinds: the main lobe and the first ring of the
focused probe then fit inside the central ``N/2 x N/2`` region that the network reconstructs.
"""

from __future__ import annotations

import math

import numpy as np

from ptychopinn.config import PROBE_KINDS  # valid ``kind`` values of make_probe
from ptychopinn.config_fields import is_int, is_num
from ptychopinn.errors import ConfigError

DEFAULT_DEFOCUS = math.pi / 2
"""Quadratic pupil phase (radians) at the pupil edge of the focused probe: a quarter wave of defocus."""

PUPIL_EDGE_PX = 2.0
"""Width (frequency pixels) of the linear ramp that softens the focused probe's pupil edge."""


def _centred_grid(n: int) -> np.ndarray:
    """``[n, n]`` float64 distance in pixels from pixel ``(n//2, n//2)``."""
    ax = np.arange(n, dtype=np.float64) - n // 2
    return np.hypot(ax[:, None], ax[None, :])


def _ifft2c(k: np.ndarray) -> np.ndarray:
    """Centred inverse FFT with the convention of :func:`ptychopinn.physics.fft.ifft2c` (origin at N//2)."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k), norm="ortho"))


def focused_probe(n: int, diameter: float, defocus: float = DEFAULT_DEFOCUS, stop: float = 0.0) -> np.ndarray:
    """Focused-beam probe ``[n, n]`` complex64 with central spot diameter ``diameter`` px (module docs)."""
    radius = 1.22 * n / diameter  # pupil radius in frequency pixels (first Airy zero at diameter/2)
    rho = _centred_grid(n)
    # soft edge centred on the nominal radius: limits the wrap-around of the Airy tails
    pupil = np.clip((radius + 0.5 * PUPIL_EDGE_PX - rho) / PUPIL_EDGE_PX, 0.0, 1.0)
    if stop > 0:
        pupil = pupil * np.clip((rho - stop * radius + 0.5 * PUPIL_EDGE_PX) / PUPIL_EDGE_PX, 0.0, 1.0)
    field = pupil * np.exp(1j * defocus * (rho / radius) ** 2)
    probe = _ifft2c(field)
    return (probe / np.abs(probe).max()).astype(np.complex64)


def gaussian_probe(n: int, fwhm: float) -> np.ndarray:
    """Gaussian probe ``[n, n]`` complex64 (real, zero phase) with amplitude FWHM ``fwhm`` px."""
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    r = _centred_grid(n)
    return np.exp(-(r ** 2) / (2.0 * sigma ** 2)).astype(np.complex64)


def make_probe(kind: str, N: int, *, diameter: float | None = None,  # noqa: N803 - N is the patch size
               defocus: float = DEFAULT_DEFOCUS, stop: float = 0.0) -> np.ndarray:
    """Make a synthetic probe.

    Args:
        kind: ``'focused'`` or ``'gaussian'`` (see the module docstring).
        N: probe (patch) side in pixels, even, >= 8.
        diameter: central spot diameter in pixels: first-Airy-zero diameter (``'focused'``) or
            amplitude FWHM (``'gaussian'``); ``None`` means ``N / 4``. Focused probes need
            ``1.22 N / (N/2 - 2) <= diameter <= N`` (the pupil, soft edge included, must fit the grid).
        defocus: quadratic pupil phase in radians at the pupil edge (``'focused'`` only; 0 is an
            in-focus Airy spot; the default is a quarter wave).
        stop: central stop as a fraction of the pupil radius, in [0, 0.9] (``'focused'`` only; 0 = none).

    Returns:
        ``[N, N]`` complex64 probe centred on pixel ``(N//2, N//2)``, peak amplitude 1.

    Raises:
        ConfigError: unknown kind, bad N or diameter.
    """
    if kind not in PROBE_KINDS:
        raise ConfigError(f"probe kind: expected one of {list(PROBE_KINDS)}, got {kind!r}; "
                          "choose one of those")
    if not is_int(N) or N < 8 or N % 2:
        raise ConfigError(f"probe size N: expected an even integer >= 8, got {N!r}; pass e.g. 64")
    n = int(N)
    d = n / 4.0 if diameter is None else float(diameter)
    if not math.isfinite(d) or d <= 0 or d > n:
        raise ConfigError(f"probe diameter: expected a number of pixels in (0, {n}], got {diameter!r}; "
                          f"leave it unset for the default N/4 = {n / 4:g}")
    if not math.isfinite(float(defocus)):
        raise ConfigError(f"probe defocus: expected a finite phase in radians, got {defocus!r}; e.g. 3.14")
    if not (is_num(stop) and 0.0 <= stop <= 0.9):
        raise ConfigError(f"probe stop: expected a fraction of the pupil radius in [0, 0.9], got {stop!r}; e.g. 0.3")
    if kind == "gaussian":
        return gaussian_probe(n, d)
    # the soft pupil edge must stay inside the frequency grid (|k| < N/2) to keep the probe symmetric
    min_d = 1.22 * n / (n / 2 - 1 - 0.5 * PUPIL_EDGE_PX)
    if d < min_d:
        raise ConfigError(f"probe diameter: a focused {n} x {n} probe needs a central spot of at least "
                          f"{min_d:.3g} pixels, got {d:g}; use a larger diameter or probe kind 'gaussian'")
    return focused_probe(n, d, float(defocus), float(stop))


def zone_plate_probe(N: int, radius: float, *, focus: float = 4.0, stop: float = 0.3) -> np.ndarray:  # noqa: N803
    """A zone plate out of focus: the ``'focused'`` probe with central spot ``focus`` px, a central stop of
    ``stop`` times the pupil radius, and the defocus that gives a geometric radius of ``radius`` px (a wide
    ring with fringes; module docstring).

    Returns:
        ``[N, N]`` complex64, peak amplitude 1.
    """
    return make_probe("focused", N, diameter=focus, defocus=1.22 * math.pi * float(radius) / float(focus), stop=stop)
