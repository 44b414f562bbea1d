"""Scan patterns: raster (with jitter) and Fermat spiral, plus the probe-size / overlap arithmetic.

Positions are ``[M, 2]`` float64 ``(x, y)`` = (column, row) in object pixels of the probe centre,
the object point under patch pixel ``(N//2, N//2)`` (see :mod:`ptychopinn.physics.patches`). Every
returned position lies in the *valid area*

    ``N//2 <= x <= W - 1 - N//2`` and ``N//2 <= y <= H - 1 - N//2``,

so the whole ``N x N`` patch, including the extra column/row that bilinear sub-pixel sampling
reads, lies inside the object: no simulated pattern ever sees the zero padding outside it.
"""

from __future__ import annotations

import math

import numpy as np

from ptychopinn.config_fields import is_int
from ptychopinn.errors import ConfigError, DataFormatError, describe_array

MAX_POSITIONS = 10_000_000
"""Refuse scans with more points than this (almost certainly a step given in the wrong units)."""

PROBE_ENERGY_FRACTION = 0.9
"""Share of the probe intensity inside the disk whose diameter :func:`probe_diameter` reports."""

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
_JITTER_STREAM = 303
_SUBSET_STREAM = 404
_SPIRAL_STREAM = 505
_ERROR_STREAM = 707


def valid_area(object_shape: tuple[int, int], N: int) -> tuple[float, float, float, float]:  # noqa: N803
    """``(xmin, xmax, ymin, ymax)`` in pixels: where a probe centre keeps its N x N patch inside the object.

    Raises:
        ConfigError: the object is smaller than one patch (plus one pixel for sub-pixel sampling).
    """
    if len(object_shape) != 2:
        raise ConfigError(f"object shape: expected (H, W), got {tuple(object_shape)!r}; pass obj.shape")
    h, w = (int(v) for v in object_shape)
    if not is_int(N) or N < 1:
        raise ConfigError(f"patch size N: expected a positive integer, got {N!r}; pass e.g. 64")
    half = int(N) // 2
    xmin, xmax, ymin, ymax = float(half), float(w - 1 - half), float(half), float(h - 1 - half)
    if xmax < xmin or ymax < ymin:
        raise ConfigError(f"object shape: expected at least {2 * half + 1} x {2 * half + 1} pixels to hold "
                          f"one {N} x {N} patch, got {h} x {w}; use a larger object or a smaller N")
    return xmin, xmax, ymin, ymax


def _check_step(step: float) -> float:
    step = float(step)
    if not math.isfinite(step) or step <= 0:
        raise ConfigError(f"scan step: expected a positive number of pixels, got {step!r}; "
                          "lower the overlap or use a larger probe")
    return step


def _check_count(expected: float) -> None:
    if expected > MAX_POSITIONS:
        raise ConfigError(f"scan: expected at most {MAX_POSITIONS} positions, the step would give about "
                          f"{expected:.3g}; use a larger step (it is in object pixels)")


def _take_n(positions: np.ndarray, n_points: int | None, kind: str,
            rng: np.random.Generator | None) -> np.ndarray:
    if n_points is None:
        return positions
    if not is_int(n_points) or n_points < 1:
        raise ConfigError(f"n_points: expected a positive integer or None, got {n_points!r}; e.g. 500")
    m = positions.shape[0]
    if n_points > m:
        raise ConfigError(f"n_points: expected at most {m} (all positions of this {kind} scan), got "
                          f"{n_points}; lower n_points, enlarge the object or increase the overlap")
    if rng is None:
        return positions[:n_points]
    keep = np.sort(rng.choice(m, size=int(n_points), replace=False))  # keep the raster order
    return positions[keep]


def _axis(lo: float, hi: float, step: float) -> np.ndarray:
    """Evenly spaced coordinates with spacing ``step``, centred in ``[lo, hi]``."""
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    start = lo + 0.5 * ((hi - lo) - (n - 1) * step)
    return start + step * np.arange(n, dtype=np.float64)


def raster_positions(
    object_shape: tuple[int, int],
    N: int,  # noqa: N803 - N is the patch size
    step: float,
    *,
    jitter: float = 0.0,
    n_points: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Raster scan: a square grid of spacing ``step`` centred in the valid area, optionally jittered.

    Args:
        object_shape: ``(H, W)`` of the object in pixels.
        N: patch size in pixels.
        step: grid spacing in pixels (> 0).
        jitter: each coordinate moves by a uniform random amount in ``[-jitter, jitter]`` pixels, then
            is clipped into the valid area (so jittered points at the border pile up on it).
        n_points: keep a seeded random subset of this many points (in raster order); None keeps all.
        seed: integer seed of the jitter and the subset.

    Returns:
        ``[M, 2]`` float64 ``(x, y)`` positions in pixels, row by row (y outer, x inner).

    Raises:
        ConfigError: bad step or jitter, object too small, or more ``n_points`` than grid points.
    """
    xmin, xmax, ymin, ymax = valid_area(object_shape, N)
    step = _check_step(step)
    jitter = float(jitter)
    if not math.isfinite(jitter) or jitter < 0:
        raise ConfigError(f"jitter: expected a non-negative number of pixels, got {jitter!r}; e.g. 0.5")
    _check_count(((xmax - xmin) / step + 1) * ((ymax - ymin) / step + 1))
    xs, ys = _axis(xmin, xmax, step), _axis(ymin, ymax, step)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    pos = np.stack([gx.ravel(), gy.ravel()], axis=1)
    if jitter > 0:
        rng = np.random.default_rng([int(seed), _JITTER_STREAM])
        pos = pos + rng.uniform(-jitter, jitter, size=pos.shape)
        pos[:, 0] = np.clip(pos[:, 0], xmin, xmax)
        pos[:, 1] = np.clip(pos[:, 1], ymin, ymax)
    return _take_n(pos, n_points, "raster", np.random.default_rng([int(seed), _SUBSET_STREAM]))


def _spiral(n: int, c: float, theta0: float) -> np.ndarray:
    """First ``n`` points ``[n, 2]`` (dx, dy) of the Fermat spiral ``r = c sqrt(k + 1/2)`` (golden angle)."""
    k = np.arange(n, dtype=np.float64)
    r = c * np.sqrt(k + 0.5)  # +1/2 keeps the first point off the exact centre, evening the core spacing
    theta = theta0 + _GOLDEN_ANGLE * k
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _mean_nn(points: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(points).query(points, k=2)
    return float(dist[:, 1].mean())


def spiral_positions(
    object_shape: tuple[int, int],
    N: int,  # noqa: N803 - N is the patch size
    step: float,
    *,
    n_points: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Fermat-spiral scan centred on the valid area, with mean nearest-neighbour distance ~ ``step``.

    The spiral ``r_k = c sqrt(k + 1/2)``, ``theta_k = theta_0 + k * golden_angle`` fills the plane
    with near-uniform density; ``c`` is calibrated on a 2000-point spiral so that its mean
    nearest-neighbour distance equals ``step``. Points outside the valid area are dropped.

    Args:
        object_shape: ``(H, W)`` of the object in pixels.
        N: patch size in pixels.
        step: target mean nearest-neighbour distance in pixels (> 0).
        n_points: keep the first (innermost) this many points; None keeps all.
        seed: integer seed of the spiral's rotation ``theta_0``.

    Returns:
        ``[M, 2]`` float64 ``(x, y)`` positions in pixels, from the centre outwards.

    Raises:
        ConfigError: bad step, object too small, or more ``n_points`` than fit.
    """
    xmin, xmax, ymin, ymax = valid_area(object_shape, N)
    step = _check_step(step)
    c = step / _mean_nn(_spiral(2000, 1.0, 0.0))  # the spiral is self-similar: NN distance scales with c
    reach = math.hypot(0.5 * (xmax - xmin), 0.5 * (ymax - ymin)) + c
    count = math.ceil((reach / c) ** 2)  # points needed for the spiral to cover the whole valid area
    _check_count(count)
    theta0 = float(np.random.default_rng([int(seed), _SPIRAL_STREAM]).uniform(0.0, 2.0 * math.pi))
    pos = _spiral(max(count, 1), c, theta0)
    pos[:, 0] += 0.5 * (xmin + xmax)
    pos[:, 1] += 0.5 * (ymin + ymax)
    inside = (pos[:, 0] >= xmin) & (pos[:, 0] <= xmax) & (pos[:, 1] >= ymin) & (pos[:, 1] <= ymax)
    return _take_n(pos[inside], n_points, "spiral", None)


def step_for_overlap(probe_diameter: float, overlap: float) -> float:
    """Scan step (pixels) giving linear ``overlap`` between probe footprints: ``(1 - overlap) * diameter``.

    Args:
        probe_diameter: probe footprint diameter in pixels (> 0), e.g. from :func:`probe_diameter`.
        overlap: linear overlap fraction in ``[0, 1)``.
    """
    d, f = float(probe_diameter), float(overlap)
    if not math.isfinite(d) or d <= 0:
        raise ConfigError(f"probe diameter: expected a positive number of pixels, got {probe_diameter!r}; "
                          "check the probe")
    if not math.isfinite(f) or not 0.0 <= f < 1.0:
        raise ConfigError(f"overlap: expected a fraction in [0, 1), got {overlap!r}; e.g. 0.7")
    return (1.0 - f) * d


def probe_diameter(probe: np.ndarray, energy_fraction: float = PROBE_ENERGY_FRACTION) -> float:
    """Diameter (pixels) of the disk around the probe's intensity centroid holding ``energy_fraction`` of
    ``sum |P|**2`` (90 % by default: the main lobe plus the inner rings that still illuminate usefully).

    Args:
        probe: ``[N, N]`` complex (or real) probe.
        energy_fraction: share of the energy to enclose, in ``(0, 1]``.

    Returns:
        ``2 * r`` where ``r`` is the radius (pixels) of the smallest pixel ring at which the encircled
        energy reaches the fraction.

    Raises:
        DataFormatError: not a 2-D array, non-finite, or zero energy.
    """
    p = np.asarray(probe)
    if p.ndim != 2 or not np.all(np.isfinite(p)):
        raise DataFormatError(f"probe: expected a finite 2-D [N, N] array, found {describe_array(p)}; "
                              "pass a single probe mode")
    if not 0.0 < float(energy_fraction) <= 1.0:
        raise ConfigError(f"energy_fraction: expected a fraction in (0, 1], got {energy_fraction!r}; "
                          "e.g. 0.9")
    intensity = np.abs(p.astype(np.complex128)) ** 2
    total = float(intensity.sum())
    if not total > 0:
        raise DataFormatError("probe: expected non-zero amplitude, found all zeros; pass a real probe")
    rows, cols = np.indices(p.shape, dtype=np.float64)
    cy = float((intensity * rows).sum() / total)
    cx = float((intensity * cols).sum() / total)
    r = np.hypot(rows - cy, cols - cx).ravel()
    order = np.argsort(r, kind="stable")
    cumulative = np.cumsum(intensity.ravel()[order]) / total
    idx = int(np.searchsorted(cumulative, float(energy_fraction) - 1e-12))
    return 2.0 * float(r[order][min(idx, r.size - 1)])


def realistic_position_errors(m: int, *, rms: float = 10.0, outlier_fraction: float = 0.1,
                              outlier_range: tuple[float, float] = (15.0, 30.0), seed: int = 0) -> np.ndarray:
    """Errors ``[m, 2]`` float64 (dx, dy) pixels to add to nominal positions: the kind a real scan has.

    Most points are off by a 2-D Gaussian error of ``rms`` pixels (root-mean-square length, so ``rms /
    sqrt(2)`` per axis); a seeded ``outlier_fraction`` of them instead by a length drawn uniformly from
    ``outlier_range`` in a uniformly random direction (a stage that slipped or a missed trigger).

    Raises:
        ConfigError: negative sizes, a fraction outside [0, 1] or an empty range.
    """
    lo, hi = (float(v) for v in outlier_range)
    ok = (is_int(m) and m >= 0 and math.isfinite(rms) and rms >= 0
          and 0.0 <= outlier_fraction <= 1.0 and math.isfinite(hi) and 0.0 <= lo <= hi)
    if not ok:
        raise ConfigError(f"position errors: expected m >= 0, rms >= 0, outlier_fraction in [0, 1] and 0 <= lo <= "
                          f"hi, got m={m!r}, rms={rms!r}, outlier_fraction={outlier_fraction!r}, "
                          f"outlier_range={outlier_range!r}")
    rng = np.random.default_rng([int(seed), _ERROR_STREAM])
    err = rng.normal(0.0, rms / math.sqrt(2.0), size=(int(m), 2))
    out = rng.random(int(m)) < outlier_fraction
    angle = rng.uniform(0.0, 2.0 * math.pi, int(out.sum()))
    length = rng.uniform(lo, hi, int(out.sum()))
    err[out] = np.stack([length * np.cos(angle), length * np.sin(angle)], axis=1)
    return err
