"""Scan-position correction: a coarse-to-fine search of whole-pixel offsets by data misfit.

A least-squares position step (:meth:`ptychopinn.refine.rpie.RPIE._position_shift`) follows the local
slope of the misfit, so it corrects errors of a pixel or two; a pattern that is several probe features
away from its true place sees no slope towards it and stays where it is. The search instead tries
offsets: for each pattern it evaluates the noise model's misfit of the current object and probe at a
grid of whole-pixel offsets around the pattern's position (each trial window is an integer shift of the
canvas window, under the same sub-pixel-shifted probe, so a trial costs one FFT and no interpolation),
keeps the best, and then fits a parabola through the misfits of its neighbours for the sub-pixel part.

A round with radius ``R`` tries the grid ``{-K s, ..., K s}**2`` with stride ``s = ceil(R / GRID_HALF)``
(:data:`GRID_HALF` points on each side of the centre), then every whole-pixel offset within ``s`` of the
grid's best, then the parabola. A pattern moves only when its best offset lowers its misfit. The
mean move of a round is removed (a common translation of all positions is not observable; the
object would follow it).

Schedule (:class:`PositionSearch`): the first round runs at iteration ``position_start`` with the
radius ``position_search_radius`` (default ``N/2``); each later round, :data:`SEARCH_EVERY` iterations
on, halves the radius, down to :data:`MIN_RADIUS`, which then repeats; the object is refined with the
new positions in between. The sub-pixel least-squares step runs every iteration from
``position_start`` on.

Cost of a round: ``M * ((2 K + 1)**2 + (2 s + 1)**2)`` FFTs of ``N x N`` (about 370 per pattern at
radius ``N/2`` for N = 64), batched :data:`WINDOWS_PER_CHUNK` windows at a time.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ptychopinn.physics.fft import fft2u
from ptychopinn.physics.shift import split_positions, window_index

if TYPE_CHECKING:
    from ptychopinn.refine.base import Reconstructor

__all__ = ["GRID_HALF", "MIN_RADIUS", "SEARCH_EVERY", "WINDOWS_PER_CHUNK", "PositionSearch", "position_errors",
           "search_offsets"]

GRID_HALF = 8
"""Grid points on each side of the centre in the coarse stage of a search round."""

SEARCH_EVERY = 4
"""Iterations between search rounds (the object adapts to the moved positions in between)."""

MIN_RADIUS = 2
"""Smallest search radius (pixels); rounds at this radius repeat until the run ends."""

WINDOWS_PER_CHUNK = 512
"""Trial windows transformed at once (memory: about 24 bytes per window pixel)."""

_log = logging.getLogger("ptychopinn")


def position_errors(positions: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(rms, median)`` pixels of the distances between ``positions`` and ``truth`` (``[M, 2]`` (x, y)),
    after removing their mean difference (a common translation is not observable)."""
    d = np.asarray(positions, np.float64) - np.asarray(truth, np.float64)
    d -= d.mean(axis=0, keepdims=True)
    dist = np.hypot(d[:, 0], d[:, 1])
    return float(np.sqrt(np.mean(dist**2))), float(np.median(dist))


def _grid(radius: int, stride: int) -> np.ndarray:
    k = math.ceil(radius / stride)
    ax = np.arange(-k, k + 1, dtype=np.int64) * stride
    gx, gy = np.meshgrid(ax, ax, indexing="xy")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _trial_misfits(r: Reconstructor, idx: np.ndarray, corners: np.ndarray, probes: torch.Tensor,
                   measured: torch.Tensor, offsets: np.ndarray, limit: float | None = None) -> np.ndarray:
    """Misfits ``[b, k]`` float64 of patterns ``idx`` with their windows moved by each of ``offsets``
    (``[b, k, 2]`` int (dx, dy)); ``inf`` where the moved window leaves the canvas or, with ``limit``, where
    the moved position is more than ``limit`` pixels from the pattern's given position."""
    b, k = offsets.shape[:2]
    n = r.n
    h, w = r.shape
    moved = corners[:, None, :] + offsets  # [b, k, 2] (col, row) on the canvas
    inside = ((moved[..., 0] >= 0) & (moved[..., 1] >= 0) & (moved[..., 0] <= w - n) & (moved[..., 1] <= h - n))
    if limit is not None:
        drift = r.positions[idx] - r.start_positions[idx]  # [b, 2]
        total = drift[:, None, :] + offsets
        inside &= np.hypot(total[..., 0], total[..., 1]) <= limit
    safe = np.stack([np.clip(corners[:, 0], 0, w - n), np.clip(corners[:, 1], 0, h - n)], axis=1)
    moved = np.where(inside[..., None], moved, safe[:, None, :])  # evaluated, then discarded
    out = np.empty((b, k), np.float64)
    flat = r.obj.view(-1)
    per = max(1, WINDOWS_PER_CHUNK // max(b, 1))
    for lo in range(0, k, per):
        hi = min(k, lo + per)
        c = torch.from_numpy(moved[:, lo:hi].reshape(-1, 2)).to(r.device)
        windows = flat[window_index(c, n, w)].view(b, hi - lo, n, n)
        far = fft2u(probes[:, None] * windows)
        mis = r.noise.pattern_misfit(far.view(-1, n, n), measured.repeat_interleave(hi - lo, dim=0), r._weights)
        out[:, lo:hi] = mis.view(b, hi - lo).double().cpu().numpy()
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
                   limit: float | None = None) -> np.ndarray:
    """One search round (module docstring) over patterns ``idx`` (default all): the moves ``[b, 2]``
    float64 (dx, dy) pixels that lower each pattern's misfit, 0 for patterns that keep their place; with
    ``limit``, no pattern is moved farther than ``limit`` pixels from its given position. The object, probe
    and positions of ``r`` are not changed."""
    m = r.scan.n_points
    idx = np.arange(m) if idx is None else np.asarray(idx)
    stride = max(1, math.ceil(radius / GRID_HALF))
    coarse = _grid(radius, stride)
    fine = _grid(stride, 1)
    moves = np.zeros((idx.size, 2), np.float64)
    with torch.no_grad():
        for sel in r._batches(np.arange(idx.size)):
            batch = idx[sel]
            corner, _ = split_positions(r.positions[batch], r.n)
            corner = corner - r._lo
            probes = r._probes(batch)
            measured = r._measured(batch)
            b = batch.size
            # the current place first: a pattern moves only when a trial beats it
            here = _trial_misfits(r, batch, corner, probes, measured, np.zeros((b, 1, 2), np.int64))[:, 0]
            mis = _trial_misfits(r, batch, corner, probes, measured, np.broadcast_to(coarse, (b, *coarse.shape)),
                                 limit)
            best = coarse[np.argmin(mis, axis=1)]  # [b, 2]
            cand = best[:, None, :] + fine[None]  # [b, (2s+1)**2, 2]
            mis = _trial_misfits(r, batch, corner, probes, measured, cand, limit)
            j = np.argmin(mis, axis=1)
            best = cand[np.arange(b), j]
            best_mis = mis[np.arange(b), j]
            # parabola through the neighbours of the best offset along each axis
            sub = np.zeros((b, 2))
            for axis in (0, 1):
                step = np.zeros(2, np.int64)
                step[axis] = 1
                nb = np.stack([best - step, best + step], axis=1)
                m_nb = _trial_misfits(r, batch, corner, probes, measured, nb, limit)
                sub[:, axis] = _parabola(m_nb[:, 0], best_mis, m_nb[:, 1])
            better = best_mis < here
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
        k = (iteration - self.start) // SEARCH_EVERY
        return max(MIN_RADIUS, self.radius >> k) if self.radius >= MIN_RADIUS else self.radius

    def run(self, r: Reconstructor, iteration: int) -> np.ndarray | None:
        """The moves ``[M, 2]`` of the round due at ``iteration`` with their mean removed, or None."""
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
        if moved.any():
            moves -= moves.mean(axis=0, keepdims=True)
        return moves
