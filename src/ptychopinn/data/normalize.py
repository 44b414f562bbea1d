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
