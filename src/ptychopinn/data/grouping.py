"""Group scan positions into sets of C = gridsize**2 neighbouring points.

A *group* is one training/inference sample: C diffraction patterns whose probe positions overlap, so the
physics layer can enforce real-space consistency between them. Each group has

* ``indices``          ``[B, C]`` int64 — indices of its member scan points in the ORIGINAL positions array
  (also when ``n_subsample`` restricted the pool, so they can index the diffraction stack directly);
* ``global_offsets``   ``[B, 2]`` float64 (x, y) px — the group centre, the mean of the member positions;
* ``relative_offsets`` ``[B, C, 2]`` float64 (x, y) px — each member position MINUS the group centre.

Sign convention (stated once, here): ``relative = member - centre``, hence ``member = centre + relative``.
This is the OPPOSITE sign of the reference implementation's ``coords_relative``, which stores
``-(member - centre)``; anything ported from the reference must flip that sign. Positions are in object
pixels with x = column and y = row, in that order along the last axis.

Channel order: channel 0 is the seed point of the group, channels 1..C-1 are the chosen neighbours in
order of increasing distance from the seed. No spatial raster is implied; geometry is carried entirely by
the offsets.

Algorithm for gridsize > 1 ("sample seeds, then group"): every scan point (or a seeded random/sequential
choice of ``n_groups`` points) is a seed; a k-d tree gives each seed its K = ``neighbor_count`` nearest
OTHER points, and C-1 of those are drawn without replacement. Unlike the reference, which drops the seed and
draws all C members from its neighbours, the seed is always member 0 here: every requested seed position is
then guaranteed to be covered, so inference over all seeds reconstructs every scan position.

Randomness comes from independent child streams of ``np.random.SeedSequence(seed)`` (subsampling, seed
choice, neighbour choice), so e.g. changing ``n_groups`` does not change which points ``n_subsample`` kept.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ptychopinn.config_fields import is_int
from ptychopinn.errors import ConfigError, DataFormatError, describe_array

__all__ = ["Groups", "group_positions", "group_summary"]

# Above this many (seed x combination) table entries the oversampling path switches from an explicit
# per-seed permutation of all combinations to draw-and-reject, which needs memory only per group.
_TABLE_MAX_ELEMENTS = 2**18
_MAX_REDRAW_ROUNDS = 10_000


@dataclass(frozen=True)
class Groups:
    """Result of :func:`group_positions`.

    Attributes:
        indices: ``[B, C]`` int64, indices of the member scan points into the original positions array;
            channel 0 is the group's seed point.
        global_offsets: ``[B, 2]`` float64 (x, y) px, group centre = mean of the member positions.
        relative_offsets: ``[B, C, 2]`` float64 (x, y) px, member position minus group centre.
        gridsize: g, with C = g * g channels per group.
    """

    indices: np.ndarray
    global_offsets: np.ndarray
    relative_offsets: np.ndarray
    gridsize: int

    def __post_init__(self) -> None:
        c = self.gridsize * self.gridsize
        ind, glo, rel = self.indices, self.global_offsets, self.relative_offsets
        ok = (
            ind.ndim == 2
            and ind.shape[1] == c
            and glo.shape == (ind.shape[0], 2)
            and rel.shape == (ind.shape[0], c, 2)
        )
        if not ok:
            raise DataFormatError(
                f"Groups expected indices [B, {c}], global_offsets [B, 2], relative_offsets [B, {c}, 2] "
                f"for gridsize {self.gridsize}; found indices {describe_array(ind)}, global_offsets "
                f"{describe_array(glo)}, relative_offsets {describe_array(rel)}; build Groups with "
                f"group_positions()"
            )

    @property
    def n_groups(self) -> int:
        """Number of groups B."""
        return int(self.indices.shape[0])

    @property
    def channels(self) -> int:
        """Members per group C = gridsize**2."""
        return int(self.indices.shape[1])

    def member_positions(self) -> np.ndarray:
        """Absolute member positions, ``[B, C, 2]`` float64 (x, y) px: ``global[:, None] + relative``.

        Equal to ``positions[indices]`` up to floating-point rounding (exactly, for positions on a dyadic
        grid such as integers or quarter pixels).
        """
        return self.global_offsets[:, None, :] + self.relative_offsets

    def subset(self, sel: Any) -> Groups:
        """Groups selected by ``sel`` (a slice, integer index array or boolean mask of length B).

        The result always keeps the group axis (an integer selects a one-group ``Groups``).
        """
        try:
            rows = np.atleast_1d(np.arange(self.n_groups)[sel])
        except IndexError as exc:
            raise ConfigError(
                f"Groups.subset expected a slice, integer indices in [-{self.n_groups}, {self.n_groups}) "
                f"or a boolean mask of length {self.n_groups}; found {describe_array(sel)} ({exc}); "
                f"fix the selection"
            ) from None
        if rows.ndim != 1:
            raise ConfigError(
                f"Groups.subset expected a 1-D selection of groups; found one that selects "
                f"{describe_array(rows)}; pass a 1-D index array or mask"
            )
        return Groups(
            indices=self.indices[rows],
            global_offsets=self.global_offsets[rows],
            relative_offsets=self.relative_offsets[rows],
            gridsize=self.gridsize,
        )


def _check_int(name: str, value: object, minimum: int) -> int:
    if not is_int(value):
        raise ConfigError(f"{name} must be an integer >= {minimum}; found {value!r}; pass a whole number")
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; found {value}; raise {name}")
    return int(value)


def _validate_positions(positions: np.ndarray) -> np.ndarray:
    arr = np.asarray(positions)
    if arr.dtype.kind not in "iuf":
        raise DataFormatError(
            f"positions must be a real numeric [M, 2] (x, y) array in pixels; found {describe_array(arr)}; "
            f"convert the scan coordinates to float"
        )
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
        raise DataFormatError(
            f"positions must have shape [M, 2] with M >= 1, columns (x, y) in pixels; found "
            f"{describe_array(arr)}; stack them as np.stack([xcoords, ycoords], axis=1)"
        )
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataFormatError(
            f"positions must be finite; found {int(bad.sum())} rows with NaN/inf (first at index "
            f"{int(np.flatnonzero(bad)[0])}); drop or repair those scan points"
        )
    return arr


def _choose_seeds(m: int, n_groups: int, sequential: bool, rng: np.random.Generator) -> np.ndarray:
    """``[n_groups]`` int64 distinct seed indices in ``[0, m)``, ascending (stable stitching order)."""
    if sequential:
        return np.arange(n_groups, dtype=np.int64)
    return np.sort(rng.choice(m, size=n_groups, replace=False)).astype(np.int64)


def _neighbour_table(pos: np.ndarray, seeds: np.ndarray, k: int) -> np.ndarray:
    """``[S, k]`` int64: the k nearest points other than the seed, nearest first, for each seed.

    ``pos`` is ``[M, 2]`` float64 px with ``k <= M - 1``.
    """
    tree = cKDTree(pos)
    # The query dominates the cost for large scans. Issuing it in the tree's leaf order keeps consecutive
    # queries spatially close (cache friendly, ~2x faster on shuffled scans); workers=-1 parallelises it.
    leaf_rank = np.empty(len(pos), dtype=np.int64)
    leaf_rank[tree.indices] = np.arange(len(pos), dtype=np.int64)
    order = np.argsort(leaf_rank[seeds], kind="stable")
    _, nbr_sorted = tree.query(pos[seeds[order]], k=k + 1, workers=-1)
    nbr = np.empty((len(seeds), k + 1), dtype=np.int64)
    nbr[order] = nbr_sorted
    # The seed is normally column 0, but with duplicated positions a tie can put it elsewhere or (with
    # more than k+1 coincident points) leave it out; then drop the farthest column instead.
    is_self = nbr == seeds[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    return nbr[~is_self].reshape(len(seeds), k)


def _draw_columns(rng: np.random.Generator, rows: int, k: int, r: int) -> np.ndarray:
    """``[rows, r]`` int64: r distinct column indices in ``[0, k)`` per row, uniformly, ascending."""
    # argsort of iid keys is a uniform random permutation per row, without a Python loop per row.
    picks = np.argsort(rng.random((rows, k)), axis=1)[:, :r]
    return np.sort(picks, axis=1)


def _oversample(
    m: int, n_groups: int, k: int, r: int, sequential: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (seed, neighbour-combination) pairs for ``n_groups > m``.

    Seeds are drawn with replacement but balanced: every point is a seed q or q+1 times
    (``n_groups = q*m + extra``) so coverage stays uniform; a repeated seed gets a different C-1-subset of
    its k neighbours each time. Returns ``seeds`` ``[n_groups]`` int64 and ``cols`` ``[n_groups, r]`` int64
    (ascending column indices into the seed's neighbour table).
    """
    ncomb = math.comb(k, r)
    q, extra = divmod(n_groups, m)
    counts = np.full(m, q, dtype=np.int64)
    if sequential:
        counts[:extra] += 1
    else:
        counts[rng.choice(m, size=extra, replace=False)] += 1
    seeds = np.repeat(np.arange(m, dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    occurrence = np.arange(n_groups, dtype=np.int64) - np.repeat(starts, counts)
    max_count = int(counts.max())

    if sequential:
        # Deterministic: occurrence j of a seed uses the j-th combination in lexicographic order, so the
        # first group of every seed is its C-1 nearest neighbours.
        table = np.array(list(itertools.islice(itertools.combinations(range(k), r), max_count)), np.int64)
        return seeds, table[occurrence]

    if m * ncomb <= max(4 * n_groups, _TABLE_MAX_ELEMENTS):
        # Small combination space: a random permutation of all combinations per seed; take the first
        # counts[s] of them, which are distinct by construction.
        table = np.array(list(itertools.combinations(range(k), r)), dtype=np.int64)
        order = np.argsort(rng.random((m, ncomb)), axis=1)
        return seeds, table[order[seeds, occurrence]]

    # Large combination space (each seed uses < 1/4 of it): draw, then redraw only the duplicates.
    cols = _draw_columns(rng, n_groups, k, r)
    for _ in range(_MAX_REDRAW_ROUNDS):
        key = np.concatenate([seeds[:, None], cols], axis=1)
        _, first = np.unique(key, axis=0, return_index=True)
        dup = np.ones(n_groups, dtype=bool)
        dup[first] = False
        if not dup.any():
            return seeds, cols
        cols[dup] = _draw_columns(rng, int(dup.sum()), k, r)
    raise RuntimeError("oversampling could not draw distinct neighbour combinations; this is a bug")


def effective_neighbor_count(neighbor_count: int, gridsize: int) -> int:
    """The K a gridsize-``g`` group is drawn from: the requested K, raised to ``g**2 - 1`` when smaller.

    A group takes its seed's C-1 nearest neighbours (C = g**2), so fewer than C-1 candidates cannot form
    a group; every caller that builds groups from a user's K goes through this one rule.
    """
    return max(int(neighbor_count), gridsize * gridsize - 1)


def group_positions(
    positions: np.ndarray,
    gridsize: int = 1,
    *,
    n_groups: int | None = None,
    neighbor_count: int = 4,
    seed: int | None = 42,
    sequential: bool = False,
    n_subsample: int | None = None,
    enable_oversampling: bool = False,
) -> Groups:
    """Group scan positions into ``B`` groups of ``C = gridsize**2`` neighbouring points.

    Args:
        positions: ``[M, 2]`` real (x, y) scan positions in object pixels (x = column, y = row).
        gridsize: g >= 1; C = g*g members per group. g = 1 is the identity grouping (relative offsets 0).
        n_groups: number of groups B. None: one group per (sub-sampled) scan point, in index order.
            Otherwise a seeded random choice of distinct seed points (the first ``n_groups`` points when
            ``sequential``), returned in ascending seed order so stitching order is stable.
        neighbor_count: K, size of each seed's neighbour pool (nearest other points); must be >= C-1.
            Clipped to M-1 when the scan is smaller.
        seed: seed for all random choices; None draws fresh OS entropy (non-reproducible).
        sequential: deterministic mode: first ``n_groups`` seeds and each seed's C-1 nearest neighbours.
        n_subsample: first restrict the pool to a seeded random subset of this many scan points (always
            random, also when ``sequential``). Returned indices still refer to the original array.
        enable_oversampling: allow ``n_groups`` > M for gridsize > 1 by using each seed several times with
            distinct neighbour combinations (at most M * comb(K, C-1) groups).

    Returns:
        :class:`Groups` with ``indices`` ``[B, C]`` int64, ``global_offsets`` ``[B, 2]`` float64 px and
        ``relative_offsets`` ``[B, C, 2]`` float64 px (member minus centre).

    Raises:
        DataFormatError: positions are not a finite real ``[M, 2]`` array, or fewer than C points.
        ConfigError: an argument is out of range (see messages).
    """
    pos_all = _validate_positions(positions)
    g = _check_int("gridsize", gridsize, 1)
    k_req = _check_int("neighbor_count", neighbor_count, 1)
    c = g * g
    m_all = pos_all.shape[0]
    rng_sub, rng_seed, rng_nbr = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    if n_subsample is None:
        pool = np.arange(m_all, dtype=np.int64)
    else:
        n_sub = _check_int("n_subsample", n_subsample, 1)
        if n_sub > m_all:
            raise ConfigError(
                f"n_subsample must be at most the number of scan points ({m_all}); found {n_sub}; "
                f"lower n_subsample or leave it unset to use all points"
            )
        pool = np.sort(rng_sub.choice(m_all, size=n_sub, replace=False)).astype(np.int64)
    pos = pos_all[pool]
    m = pos.shape[0]
    where = f"{m} points" if n_subsample is None else f"{m} points after n_subsample"

    n_req = None if n_groups is None else _check_int("n_groups", n_groups, 1)

    if c == 1:
        if n_req is None:
            seeds = np.arange(m, dtype=np.int64)
        elif n_req > m:
            if enable_oversampling:
                raise ConfigError(
                    f"oversampling needs gridsize > 1 (a gridsize-1 group is a single point, so repeats "
                    f"would be identical); found gridsize 1 and n_groups={n_req} for a scan of {where}; "
                    f"lower n_groups to at most {m} or use gridsize >= 2"
                )
            raise ConfigError(
                f"asked for {n_req} groups but the scan has {where}; with gridsize 1 there is one group "
                f"per point, so lower n_groups to at most {m}"
            )
        else:
            seeds = _choose_seeds(m, n_req, sequential, rng_seed)
        idx = pool[seeds][:, None]
        return Groups(
            indices=idx,
            global_offsets=pos_all[idx[:, 0]].copy(),
            relative_offsets=np.zeros((len(idx), 1, 2), dtype=np.float64),
            gridsize=1,
        )

    if k_req < c - 1:
        raise ConfigError(
            f"neighbor_count must be at least C-1 = {c - 1} for gridsize {g} (each group takes {c - 1} "
            f"neighbours of its seed); found {k_req}; increase neighbor_count to at least {c - 1}"
        )
    if m < c:
        raise DataFormatError(
            f"gridsize {g} needs at least {c} scan points, got {m}; "
            f"use more scan points or a smaller gridsize"
        )
    k = min(k_req, m - 1)
    r = c - 1

    if n_req is None:
        seeds = np.arange(m, dtype=np.int64)
        cols = None
    elif n_req <= m:
        seeds = _choose_seeds(m, n_req, sequential, rng_seed)
        cols = None
    else:
        if not enable_oversampling:
            raise ConfigError(
                f"asked for {n_req} groups but the scan has {where}; set enable_oversampling=True to draw "
                f"several groups per seed, or lower n_groups"
            )
        max_groups = m * math.comb(k, r)
        if n_req > max_groups:
            raise ConfigError(
                f"asked for {n_req} groups but {where} with neighbor_count={k} allow at most {m} x "
                f"comb({k}, {r}) = {max_groups} distinct groups; lower n_groups or raise neighbor_count"
            )
        seeds, cols = _oversample(m, n_req, k, r, sequential, rng_nbr)

    if cols is None:
        if sequential:
            cols = np.broadcast_to(np.arange(r, dtype=np.int64), (len(seeds), r))
        else:
            cols = _draw_columns(rng_nbr, len(seeds), k, r)

    if n_req is not None and n_req > m:
        # One tree query per distinct seed; oversampled groups share their seed's row.
        uniq, inverse = np.unique(seeds, return_inverse=True)
        nbr = _neighbour_table(pos, uniq, k)[inverse]
    else:
        nbr = _neighbour_table(pos, seeds, k)
    members = np.concatenate([seeds[:, None], np.take_along_axis(nbr, cols, axis=1)], axis=1)

    idx = pool[members]
    member_pos = pos_all[idx]
    centre = member_pos.mean(axis=1)
    return Groups(
        indices=idx,
        global_offsets=centre,
        relative_offsets=member_pos - centre[:, None, :],
        gridsize=g,
    )


def group_summary(groups: Groups) -> dict[str, int | float]:
    """Plain-Python summary of a grouping, for the info command and logs.

    Keys: ``n_groups``, ``gridsize``, ``channels``, ``n_points_covered`` (distinct scan points used),
    ``max_abs_relative_offset_px`` (largest |x| or |y| component of any relative offset, px),
    ``max_relative_distance_px`` (largest member-to-centre distance, px) and
    ``mean_relative_distance_px`` (mean member-to-centre distance, px).
    """
    if not isinstance(groups, Groups):
        raise TypeError(f"group_summary expects a Groups instance, got {type(groups).__name__}")
    rel = groups.relative_offsets
    dist = np.hypot(rel[..., 0], rel[..., 1])
    empty = rel.size == 0
    return {
        "n_groups": groups.n_groups,
        "gridsize": groups.gridsize,
        "channels": groups.channels,
        "n_points_covered": int(np.unique(groups.indices).size),
        "max_abs_relative_offset_px": 0.0 if empty else float(np.abs(rel).max()),
        "max_relative_distance_px": 0.0 if empty else float(dist.max()),
        "mean_relative_distance_px": 0.0 if empty else float(dist.mean()),
    }
