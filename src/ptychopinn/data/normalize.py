"""The two scales of the data contract (kept separate on purpose).

* Input normalisation ``a``: the network sees ``X = a * A`` with
  ``a = sqrt((N/2)**2 / mean_over_patterns(sum_pixels A**2))``, so a pattern carries on average
  ``(N/2)**2`` of energy (mean per-pixel ``X**2`` of 1/4) whatever the dose or detector.
* Intensity (photon) scale ``s = sqrt(nphotons) / (N/2)``: ``(s * X)**2`` are photon counts with a
  mean total of ``nphotons`` per pattern. It is used only by the likelihood. When the data are
  detector counts (or their square root), ``nphotons`` measured from the data makes ``s = 1/a``
  exactly, i.e. the likelihood sees the real counts.

Both are computed in float64 and in chunks, so they work on memory-mapped scans of any size.
"""

from __future__ import annotations

import math

import numpy as np

_CHUNK = 256


def mean_pattern_energy(diffraction: np.ndarray, indices: np.ndarray | None = None,
                        weights: np.ndarray | None = None) -> float:
    """Mean over patterns of ``sum_pixels w * A**2``. ``diffraction``: ``[M, N, N]`` amplitude;
    ``weights``: optional ``[N, N]`` detector-pixel weights (1 = measured, 0 = masked; see
    :meth:`ScanData.pixel_weights`), so masked pixels never count."""
    idx = np.arange(diffraction.shape[0]) if indices is None else np.unique(np.asarray(indices).ravel())
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    total = 0.0
    for start in range(0, idx.size, _CHUNK):
        block = np.square(np.asarray(diffraction[idx[start:start + _CHUNK]], dtype=np.float64))
        total += float((block if w is None else block * w).sum())
    return total / max(idx.size, 1)


def input_scale(diffraction: np.ndarray, indices: np.ndarray | None = None,
                weights: np.ndarray | None = None) -> float:
    """Input normalisation factor ``a`` (float) of amplitude patterns ``[M, N, N]`` (measured pixels only
    when ``weights`` ``[N, N]`` are given)."""
    n = diffraction.shape[-1]
    energy = mean_pattern_energy(diffraction, indices, weights)
    if not energy > 0:
        raise ValueError("all diffraction patterns are zero; nothing to normalise")
    return math.sqrt((n / 2) ** 2 / energy)


def intensity_scale(N: int, nphotons: float) -> float:
    """Intensity scale ``s = sqrt(nphotons) / (N/2)`` for patch size ``N``."""
    return math.sqrt(nphotons) / (N / 2)


TRANSMISSION_COVERAGE = 0.5
"""Pixels whose illumination is at least this fraction of its maximum count for :func:`transmission_level`."""


def transmission_level(obj: np.ndarray, coverage: np.ndarray | None = None) -> float:
    """The free-space amplitude of an object image: where the sample is empty, a transmission image is 1.

    It is the most common amplitude among the brighter half of the well-illuminated pixels (coverage at least
    :data:`TRANSMISSION_COVERAGE` of its maximum; all pixels when ``coverage`` is None): the peak of a
    histogram of those amplitudes (64 bins between their median and 99.5th percentile, smoothed over 3
    bins). A sample with empty areas puts that peak on the empty areas; one without them on its most common
    bright level, so its brightest common areas read about 1. Noise moves the peak far less than it moves a
    high percentile.

    Args:
        obj: ``[H, W]`` complex object image (any units).
        coverage: ``[H, W]`` illumination relative to its maximum (0 = not illuminated), or None.

    Returns:
        The level (float, > 0), or 1.0 when there is nothing to measure (no illuminated non-zero pixel).
    """
    amp = np.abs(np.asarray(obj)).astype(np.float64)
    if coverage is not None:
        amp = amp[np.asarray(coverage) >= TRANSMISSION_COVERAGE * max(float(np.max(coverage)), 1e-30)]
    amp = amp[np.isfinite(amp) & (amp > 0)]
    if amp.size == 0:
        return 1.0
    lo, hi = np.percentile(amp, [50.0, 99.5])
    if not hi > lo:
        return float(lo) if lo > 0 else 1.0
    counts, edges = np.histogram(amp, bins=64, range=(lo, hi))
    smooth = np.convolve(counts.astype(np.float64), np.ones(3) / 3.0, mode="same")
    k = int(np.argmax(smooth))
    return float(0.5 * (edges[k] + edges[k + 1]))
