"""Scan-position correction for errors of many pixels: a search of whole-pixel offsets by data misfit.

A least-squares position step (:meth:`ptychopinn.refine.rpie.RPIE._position_shift`) follows the local
slope of the misfit, so it corrects errors of a pixel or two; a pattern that is several probe features
away from its true place sees no slope towards it and stays where it is. The search instead tries
offsets. Positions are ``(x, y)`` object pixels (x = column); offsets and moves are ``(dx, dy)`` pixels.

Reference object. A pattern is scored against the object that the *other* patterns make, so that a
misplaced pattern is not held in place by the part of the object it has painted itself: every pattern's
exit wave is projected onto its measured amplitudes (``psi'_k``), the canvas sums ``num = sum_k
place_k(conj(P_k) psi'_k)`` and ``den = sum_k place_k(|P_k|**2)`` are formed once per round, and for
pattern ``k`` the fraction :data:`OWN_SHARE` of its own terms is taken out:
``O_k = (num - s num_k + beta level) / (den - s den_k + beta)`` (``beta`` = :data:`REFERENCE_REG` times
``max|P|**2``, ``level`` the mean object value, the fill where nobody else illuminates).

Round of radius ``R``. Each pattern's misfit (the noise model's, under its own sub-pixel-shifted probe, so
a trial costs one FFT and no interpolation) is evaluated on the grid ``{-K s, ..., K s}**2`` of offsets
with stride ``s = ceil(R / GRID_HALF)``, then at every whole-pixel offset within ``s`` of the grid's best,
then a parabola through the best's neighbours gives the sub-pixel part. A pattern moves when

* its best whole-pixel offset is not 0 (sub-pixel corrections are the least-squares step's), and
* its best misfit is below ``1 - MOVE_MARGIN`` times its misfit where it is, and
* (rounds with ``R > 2 s``) the grid's best is distinct: below :data:`DISTINCT` times the best grid misfit
  farther than ``2 s`` from it (an ambiguous landscape waits for a better object), and

trial windows stay on the canvas, inside the bounding box of the given positions (the flat canvas
margin outside the scan would otherwise attract patterns near the edge) and within the first round's
radius of the pattern's given position.

After the moves of a round (and after the sub-pixel steps of every iteration) the affine part of the
correction, the least-squares fit ``positions - given ~ A given + t``, is removed: a common translation
is not observable and a common scale, rotation or shear is only weakly observable (the object follows
it), so the given positions keep setting the scan's global geometry and the correction keeps each
pattern's deviation from it.

Object during correction (:func:`pattern_weights`): the rPIE object update weights each pattern by
``min(1, ROBUST_FREE median / q_k)**ROBUST_POWER`` with ``q_k`` its misfit over its counts in the latest pass, so that
patterns that do not fit where they are (likely misplaced) do not smear the object the others are
matched against.

Schedule (:class:`PositionSearch`): rounds at iterations ``position_start + j SEARCH_EVERY`` (0-based),
of radius ``max(MIN_RADIUS, R0 >> (j mod CYCLE))`` with ``R0 = position_search_radius`` (default
``N/2``): coarse to fine, then again from ``R0``, so that patterns that lost their way while the object
was poor are found once it is good. The sub-pixel least-squares step runs every iteration from
``position_start`` on.

Cost of a round: ``M * ((2 K + 1)**2 + (2 s + 1)**2 + 5)`` FFTs of ``N x N`` (about 370 per pattern at
radius ``N/2`` for N = 64), batched :data:`WINDOWS_PER_CHUNK` windows at a time, plus one pass to form the
reference.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ptychopinn.physics.fft import fft2u, ifft2u
from ptychopinn.physics.noise import GaussianNoise
from ptychopinn.physics.shift import split_positions, window_index

if TYPE_CHECKING:
    from ptychopinn.refine.base import Reconstructor

__all__ = ["AFFINE_CLIP", "CANDIDATES", "CYCLE", "DISTINCT", "GRID_HALF", "MIN_RADIUS", "MOVE_MARGIN", "OWN_SHARE",
           "REFERENCE_REG", "ROBUST_FREE", "ROBUST_POWER", "SEARCH_EVERY", "WINDOWS_PER_CHUNK", "PositionSearch",
           "pattern_weights", "position_errors", "remove_affine", "search_offsets"]

GRID_HALF = 8
"""Grid points on each side of the centre in the coarse stage of a search round."""

SEARCH_EVERY = 4
"""Iterations between search rounds (the object adapts to the moved positions in between)."""

CYCLE = 4
"""Rounds per coarse-to-fine cycle (radius halved each round), after which the radius starts again."""

MIN_RADIUS = 2
"""Smallest search radius (pixels)."""

OWN_SHARE = 0.5
"""Fraction of a pattern's own contribution taken out of the reference object it is scored against (1: the
object of the other patterns alone; 0: the current object). Half did better than either end on the
simulated benchmark (benchmarks/positions.py): patterns near the scan's edge have few others to be
scored against."""

REFERENCE_REG = 0.1
"""Regularisation of the reference object, in units of ``max|P|**2`` of illumination."""

DISTINCT = 0.9
"""A pattern moves only when its best basin's misfit is below this times the runner-up basin's."""

MOVE_MARGIN = 0.1
"""Fraction by which a move must lower a pattern's misfit (a pattern that fits where it is stays there)."""

CANDIDATES = 5
"""Basins of the coarse grid (best points at least two strides apart) refined at every whole pixel."""

ROBUST_POWER = 4.0
"""Exponent of the object-update weight of patterns that fit badly (:func:`pattern_weights`)."""

ROBUST_FREE = 2.0
"""Patterns whose misfit over counts is within this factor of the median keep their full object-update weight
(down-weighting them all cost precision at the end of a run)."""

AFFINE_CLIP = 2.5
"""Residual (times the median) beyond which a pattern is left out of the affine fit (:func:`remove_affine`)."""

WINDOWS_PER_CHUNK = 512
"""Trial windows transformed at once (memory: about 24 bytes per window pixel)."""

_log = logging.getLogger("ptychopinn")
_PROJECTION = GaussianNoise()


def position_errors(positions: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(rms, median)`` pixels of the distances between ``positions`` and ``truth`` (``[M, 2]`` (x, y)),
    after removing their mean difference (a common translation is not observable)."""
    d = np.asarray(positions, np.float64) - np.asarray(truth, np.float64)
    d -= d.mean(axis=0, keepdims=True)
    dist = np.hypot(d[:, 0], d[:, 1])
    return float(np.sqrt(np.mean(dist**2))), float(np.median(dist))


def remove_affine(positions: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``positions`` ``[M, 2]`` with the affine part of ``positions - given`` (as a function of ``given``)
    removed (module docstring); returned as a new array. The fit is robust: it is repeated on the patterns
    whose residual is within :data:`AFFINE_CLIP` times the median residual, so that a few patterns that
    jump many pixels do not move all the others."""
    d = positions - given
    if len(given) < 6:  # too few points to fit an affine map; a translation only
        return positions - d.mean(axis=0, keepdims=True)
    a = np.c_[given, np.ones(len(given))]
    use = np.ones(len(given), bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(a[use], d[use], rcond=None)
        resid = np.hypot(*(d - a @ coef).T)
        keep = resid <= AFFINE_CLIP * max(float(np.median(resid)), 1e-3)
        if keep.sum() < 6 or np.array_equal(keep, use):
            break
        use = keep
    return positions - a @ coef


def pattern_weights(ratios: np.ndarray) -> np.ndarray:
    """Object-update weights ``[b]`` float32 in (0, 1]: ``min(1, ROBUST_FREE / ratio)**ROBUST_POWER`` of
    patterns whose misfit over counts is ``ratios`` times the median over the scan; NaN (not yet seen)
    gives 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.minimum(1.0, ROBUST_FREE / ratios) ** ROBUST_POWER
    return np.where(np.isfinite(w), w, 1.0).astype(np.float32)


def _grid(radius: int, stride: int) -> np.ndarray:
    k = math.ceil(radius / stride)
    ax = np.arange(-k, k + 1, dtype=np.int64) * stride
    gx, gy = np.meshgrid(ax, ax, indexing="xy")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


class _Reference:
    """The canvas sums ``num`` ``[H*W]`` complex64 and ``den`` ``[H*W]`` float32 of the projected exit waves of
    all patterns (module docstring), from which one pattern's share can be taken out."""

    def __init__(self, r: Reconstructor) -> None:
        self.num = torch.zeros(r.obj.numel(), dtype=torch.complex64, device=r.device)
        self.den = torch.zeros(r.obj.numel(), dtype=torch.float32, device=r.device)
        for idx in r._batches(np.arange(r.scan.n_points)):
            num, den = self.own(r, idx, r._probes(idx))
            flat = r._window_index(idx).reshape(-1)
            self.num.index_add_(0, flat, num.reshape(-1))
            self.den.index_add_(0, flat, den.reshape(-1))
        self.beta = REFERENCE_REG * float(r.probe.abs().square().max())
        covered = self.den > 0.1 * float(self.den.max())
        self.level = r.obj.view(-1)[covered].mean() if bool(covered.any()) else r.obj.view(-1).mean()

    @staticmethod
    def own(r: Reconstructor, idx: np.ndarray, probes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(conj(P_k) psi'_k, |P_k|**2)``, each ``[b, N, N]``, of patterns ``idx``."""
        far = fft2u(probes * r.obj.view(-1)[r._window_index(idx)])
        # the amplitude projection is the far field plus the least-squares descent direction (masked detector
        # pixels keep the model's far field)
        proj = far + _PROJECTION.direction(far, r._measured(idx), r._weights)[0]
        return probes.conj() * ifft2u(proj), probes.real.square() + probes.imag.square()

    def patches(self, r: Reconstructor, corners: np.ndarray, pad: int,
                own: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Reference patches ``[b, N + 2 pad, N + 2 pad]`` complex64 around the windows at canvas
        ``corners`` (``[b, 2]`` (col, row)), clamped at the canvas's border, with :data:`OWN_SHARE` of each
        pattern's ``own`` terms taken out."""
        n = r.n
        index = _patch_index(r, corners, pad)
        num = self.num[index]
        den = self.den[index]
        num[:, pad:pad + n, pad:pad + n] -= OWN_SHARE * own[0]
        den[:, pad:pad + n, pad:pad + n] -= OWN_SHARE * own[1]
        return (num + self.beta * self.level) / (den.clamp_min_(0.0) + self.beta)


def _patch_index(r: Reconstructor, corners: np.ndarray, pad: int) -> torch.Tensor:
    """Flat canvas indices ``[b, N + 2 pad, N + 2 pad]`` of the patches around the windows at canvas ``corners``
    (``[b, 2]`` (col, row)), clamped at the canvas's border."""
    h, w = r.shape
    ar = np.arange(r.n + 2 * pad)
    rows = np.clip(corners[:, 1, None] - pad + ar, 0, h - 1)
    cols = np.clip(corners[:, 0, None] - pad + ar, 0, w - 1)
    return torch.from_numpy(rows[:, :, None] * w + cols[:, None, :]).to(r.device)


def _current_patches(r: Reconstructor, corners: np.ndarray, pad: int) -> torch.Tensor:
    """Patches of the current object, as :meth:`_Reference.patches`."""
    return r.obj.view(-1)[_patch_index(r, corners, pad)]


def _trial_misfits(r: Reconstructor, idx: np.ndarray, corners: np.ndarray, probes: torch.Tensor,
                   measured: torch.Tensor, offsets: np.ndarray, *, patches: torch.Tensor, pad: int,
                   limit: float | None) -> np.ndarray:
    """Misfits ``[b, k]`` float64 of patterns ``idx`` with their windows moved by each of ``offsets``
    (``[b, k, 2]`` int (dx, dy)), read from ``patches`` (``[b, N + 2 pad, N + 2 pad]`` centred on the
    windows); ``inf`` where the moved window leaves the canvas or the given scan's bounding box or, with
    ``limit``, where the moved position is more than ``limit`` pixels from the pattern's given position."""
    b, k = offsets.shape[:2]
    n = r.n
    h, w = r.shape
    side = n + 2 * pad
    moved = corners[:, None, :] + offsets  # [b, k, 2] (col, row) on the canvas
    given, _ = split_positions(r.start_positions, n)
    lo = np.maximum(given.min(axis=0) - r._lo, 0)
    hi = np.minimum(given.max(axis=0) - r._lo, [w - n, h - n])
    inside = ((moved >= lo).all(axis=-1) & (moved <= hi).all(axis=-1) & (np.abs(offsets).max(axis=-1) <= pad))
    if limit is not None:
        drift = r.positions[idx] - r.start_positions[idx]  # [b, 2]
        total = drift[:, None, :] + offsets
        inside &= np.hypot(total[..., 0], total[..., 1]) <= limit
    local = np.where(inside[..., None], offsets, 0) + pad  # window corner in the patch
    out = np.empty((b, k), np.float64)
    flat = patches.reshape(-1)
    base = (torch.arange(b, device=r.device) * (side * side)).view(b, 1, 1, 1)
    per = max(1, WINDOWS_PER_CHUNK // max(b, 1))
    for lo_k in range(0, k, per):
        hi_k = min(k, lo_k + per)
        c = torch.from_numpy(local[:, lo_k:hi_k].reshape(-1, 2)).to(r.device)
        windows = flat[window_index(c, n, side).view(b, hi_k - lo_k, n, n) + base]
        far = fft2u(probes[:, None] * windows)
        mis = r.noise.pattern_misfit(far.view(-1, n, n), measured.repeat_interleave(hi_k - lo_k, dim=0), r._weights)
        out[:, lo_k:hi_k] = mis.view(b, hi_k - lo_k).double().cpu().numpy()
    out[~inside] = np.inf
    return out


def _parabola(m_minus: np.ndarray, m0: np.ndarray, m_plus: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through ``(-1, m_minus), (0, m0), (1, m_plus)``, in [-0.5, 0.5]; 0 where it
    is not a minimum or a neighbour is missing."""
    curv = m_minus - 2.0 * m0 + m_plus
    with np.errstate(invalid="ignore", divide="ignore"):
        v = 0.5 * (m_minus - m_plus) / curv
    ok = np.isfinite(v) & (curv > 0)
    return np.where(ok, np.clip(v, -0.5, 0.5), 0.0)


def search_offsets(r: Reconstructor, radius: int, idx: np.ndarray | None = None,
                   limit: float | None = None, *, reference: bool = True) -> np.ndarray:
    """One search round of ``radius`` pixels (module docstring) over patterns ``idx`` (default all): the
    moves ``[b, 2]`` float64 (dx, dy) pixels, 0 for patterns that keep their place; with ``limit``, no
    pattern is moved farther than ``limit`` pixels from its given position. ``reference=False`` scores
    against the current object itself (when it is known to be right, e.g. in tests). The object, probe
    and positions of ``r`` are not changed."""
    m = r.scan.n_points
    idx = np.arange(m) if idx is None else np.asarray(idx)
    stride = max(1, math.ceil(radius / GRID_HALF))
    coarse = _grid(radius, stride)
    fine = _grid(stride, 1)
    pad = int(np.abs(coarse).max()) + stride + 1
    moves = np.zeros((idx.size, 2), np.float64)
    with torch.no_grad():
        ref = _Reference(r) if reference else None
        for sel in r._batches(np.arange(idx.size)):
            batch = idx[sel]
            corner, _ = split_positions(r.positions[batch], r.n)
            corner = corner - r._lo
            probes = r._probes(batch)
            measured = r._measured(batch)
            patches = (ref.patches(r, corner, pad, _Reference.own(r, batch, probes)) if ref is not None
                       else _current_patches(r, corner, pad))
            trial = functools.partial(_trial_misfits, r, batch, corner, probes, measured, patches=patches, pad=pad,
                                      limit=limit)
            b = batch.size
            rows = np.arange(b)
            # the current place first: a pattern moves only when a trial beats it
            here = trial(np.zeros((b, 1, 2), np.int64), limit=None)[:, 0]
            mis = trial(np.broadcast_to(coarse, (b, *coarse.shape)))
            # the best CANDIDATES basins of the grid, each refined at every whole pixel around it
            fine_mis = np.full((b, CANDIDATES), np.inf)
            fine_best = np.zeros((b, CANDIDATES, 2), np.int64)
            for c in range(CANDIDATES):
                jc = np.argmin(mis, axis=1)
                found = np.isfinite(mis[rows, jc])
                centre = coarse[jc]  # [b, 2]
                mis = np.where(np.abs(coarse[None] - centre[:, None]).max(axis=-1) <= 2 * stride, np.inf, mis)
                cand = centre[:, None, :] + fine[None]  # [b, (2s+1)**2, 2]
                m_fine = trial(cand)
                j = np.argmin(m_fine, axis=1)
                fine_best[:, c] = cand[rows, j]
                fine_mis[:, c] = np.where(found, m_fine[rows, j], np.inf)
            jb = np.argmin(fine_mis, axis=1)
            best = fine_best[rows, jb]
            best_mis = fine_mis[rows, jb]
            # an ambiguous landscape (another basin, more than a stride away, nearly as good) waits for a
            # better object
            apart = np.abs(fine_best - best[:, None]).max(axis=-1) > stride
            runner_up = np.where(apart, fine_mis, np.inf).min(axis=1)
            distinct = ~(runner_up <= best_mis / DISTINCT)
            # parabola through the neighbours of the best offset along each axis
            sub = np.zeros((b, 2))
            for axis in (0, 1):
                step = np.zeros(2, np.int64)
                step[axis] = 1
                m_nb = trial(np.stack([best - step, best + step], axis=1))
                sub[:, axis] = _parabola(m_nb[:, 0], best_mis, m_nb[:, 1])
            # whole-pixel jumps only: a pattern whose best offset is 0 is left to the sub-pixel step
            better = (best_mis < (1.0 - MOVE_MARGIN) * here) & distinct & np.any(best != 0, axis=1)
            moves[sel] = np.where(better[:, None], best + sub, 0.0)
    return moves


class PositionSearch:
    """When and how far :func:`search_offsets` looks during a run (module docstring).

    Args:
        start: iteration (0-based) of the first round.
        radius: radius of the first round in pixels (0: never search).
    """

    def __init__(self, start: int, radius: int) -> None:
        self.start = int(start)
        self.radius = int(radius)
        self.rounds = 0

    def radius_at(self, iteration: int) -> int:
        """The search radius of ``iteration`` (0-based), 0 when no round is due."""
        if self.radius <= 0 or iteration < self.start or (iteration - self.start) % SEARCH_EVERY:
            return 0
        k = (iteration - self.start) // SEARCH_EVERY % CYCLE
        return max(MIN_RADIUS, self.radius >> k) if self.radius >= MIN_RADIUS else self.radius

    def run(self, r: Reconstructor, iteration: int) -> np.ndarray | None:
        """The moves ``[M, 2]`` float64 (dx, dy) pixels of the round due at ``iteration``, or None."""
        radius = self.radius_at(iteration)
        if not radius:
            return None
        moves = search_offsets(r, radius, limit=float(self.radius))
        self.rounds += 1
        moved = np.any(moves != 0, axis=1)
        length = np.hypot(moves[:, 0], moves[:, 1])
        _log.info("position search at iteration %d (radius %d px): %d of %d patterns moved, by %.2f px median "
                  "and %.2f px at most", iteration + 1, radius, int(moved.sum()), moves.shape[0],
                  float(np.median(length[moved])) if moved.any() else 0.0, float(length.max(initial=0.0)))
        return moves
