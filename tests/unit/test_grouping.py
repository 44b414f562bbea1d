"""Tests for ptychopinn.data.grouping (scan-position grouping)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptychopinn.data.grouping import Groups, group_positions, group_summary
from ptychopinn.errors import ConfigError, DataFormatError

# Five points on a plus sign with distinct arm lengths, so nearest-neighbour order has no ties:
#   0: (0, 0) centre   1: (1, 0) right   2: (0, 2) down   3: (-3, 0) left   4: (0, -4) up
PLUS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, -4.0]])


def _dyadic_positions(m: int, seed: int) -> np.ndarray:
    """[m, 2] float64 px on a quarter-pixel grid, so centre + (member - centre) is exact in float64."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4 * 200, size=(m, 2)).astype(np.float64) / 4.0


def _k_nearest_others(pos: np.ndarray, i: int, k: int) -> set[int]:
    d = np.hypot(*(pos - pos[i]).T)
    d[i] = np.inf
    return set(np.argsort(d, kind="stable")[:k].tolist())


# ----------------------------------------------------------------------------------------------------
# Hand-computed example
# ----------------------------------------------------------------------------------------------------


def test_plus_sign_gridsize2_sequential_exact() -> None:
    g = group_positions(PLUS, 2, sequential=True)
    # Seed first, then its 3 nearest other points in order of distance:
    #   seed 0: d(1)=1, d(2)=2, d(3)=3, d(4)=4                -> [0, 1, 2, 3]
    #   seed 1: d(0)=1, d(2)=sqrt5=2.24, d(3)=4, d(4)=sqrt17   -> [1, 0, 2, 3]
    #   seed 2: d(0)=2, d(1)=sqrt5, d(3)=sqrt13=3.61, d(4)=6   -> [2, 0, 1, 3]
    #   seed 3: d(0)=3, d(2)=sqrt13, d(1)=4, d(4)=5            -> [3, 0, 2, 1]
    #   seed 4: d(0)=4, d(1)=sqrt17=4.12, d(3)=5, d(2)=6       -> [4, 0, 1, 3]
    np.testing.assert_array_equal(
        g.indices, [[0, 1, 2, 3], [1, 0, 2, 3], [2, 0, 1, 3], [3, 0, 2, 1], [4, 0, 1, 3]]
    )
    assert g.indices.dtype == np.int64
    # Groups 0-3 all contain {0, 1, 2, 3}: centre = ((0+1+0-3)/4, (0+0+2+0)/4) = (-0.5, 0.5).
    # Group 4 contains {4, 0, 1, 3}: centre = ((0+0+1-3)/4, (-4+0+0+0)/4) = (-0.5, -1.0).
    np.testing.assert_array_equal(g.global_offsets, [[-0.5, 0.5]] * 4 + [[-0.5, -1.0]])
    # relative = member - centre, e.g. group 0 member 3 at (-3, 0): (-3 + 0.5, 0 - 0.5) = (-2.5, -0.5).
    np.testing.assert_array_equal(g.relative_offsets[0], [[0.5, -0.5], [1.5, -0.5], [0.5, 1.5], [-2.5, -0.5]])
    np.testing.assert_array_equal(g.relative_offsets[3], [[-2.5, -0.5], [0.5, -0.5], [0.5, 1.5], [1.5, -0.5]])
    # group 4: (0,-4)-(-0.5,-1)=(0.5,-3); (0,0)->(0.5,1); (1,0)->(1.5,1); (-3,0)->(-2.5,1).
    np.testing.assert_array_equal(g.relative_offsets[4], [[0.5, -3.0], [0.5, 1.0], [1.5, 1.0], [-2.5, 1.0]])
    assert g.gridsize == 2 and g.channels == 4 and g.n_groups == 5


def test_sequential_n_groups_takes_first_seeds() -> None:
    g = group_positions(PLUS, 2, n_groups=2, sequential=True)
    np.testing.assert_array_equal(g.indices, [[0, 1, 2, 3], [1, 0, 2, 3]])


def test_sequential_ignores_seed() -> None:
    pos = _dyadic_positions(60, 1)
    a = group_positions(pos, 2, n_groups=20, sequential=True, seed=1)
    b = group_positions(pos, 2, n_groups=20, sequential=True, seed=2)
    np.testing.assert_array_equal(a.indices, b.indices)


# ----------------------------------------------------------------------------------------------------
# Sign convention and geometry
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("gridsize", "k"), [(1, 4), (2, 4), (2, 7), (3, 8), (3, 12)])
def test_member_equals_centre_plus_relative_exactly(gridsize: int, k: int) -> None:
    pos = _dyadic_positions(300, 3)
    g = group_positions(pos, gridsize, neighbor_count=k, seed=5)
    np.testing.assert_array_equal(g.member_positions(), pos[g.indices])
    np.testing.assert_array_equal(g.global_offsets + g.relative_offsets[:, 0], pos[g.indices[:, 0]])
    # The centre is the mean of the members, so relative offsets sum to zero over channels.
    np.testing.assert_allclose(g.relative_offsets.sum(axis=1), 0.0, atol=1e-12)


def test_member_positions_close_for_arbitrary_floats() -> None:
    pos = np.random.default_rng(0).uniform(-1e3, 1e3, size=(500, 2))
    g = group_positions(pos, 2, seed=0)
    np.testing.assert_allclose(g.member_positions(), pos[g.indices], rtol=0, atol=1e-9)


def test_random_members_come_from_k_nearest_others() -> None:
    pos = _dyadic_positions(200, 7)
    k = 6
    g = group_positions(pos, 2, neighbor_count=k, seed=11)
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(200))  # seed first, every point a seed
    for row in g.indices:
        seed, others = int(row[0]), row[1:].tolist()
        assert len(set(row.tolist())) == 4
        assert set(others) <= _k_nearest_others(pos, seed, k)
        # neighbours are ordered by increasing distance from the seed
        d = np.hypot(*(pos[others] - pos[seed]).T)
        assert np.all(np.diff(d) >= 0)


def test_neighbour_choice_is_not_always_nearest() -> None:
    pos = _dyadic_positions(200, 7)
    g = group_positions(pos, 2, neighbor_count=6, seed=11)
    nearest = group_positions(pos, 2, neighbor_count=6, sequential=True)
    assert (g.indices != nearest.indices).any(axis=1).mean() > 0.5


def test_duplicate_positions_keep_seed_first_and_members_distinct() -> None:
    # 8 coincident points: the tree may return the seed anywhere among its zero-distance ties.
    pos = np.vstack([np.zeros((8, 2)), _dyadic_positions(20, 2) + 50.0])
    g = group_positions(pos, 2, neighbor_count=4, seed=3)
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(28))
    assert all(len(set(r.tolist())) == 4 for r in g.indices)


def test_neighbor_count_clipped_to_scan_size() -> None:
    g = group_positions(PLUS, 2, neighbor_count=50, seed=0)
    assert g.indices.shape == (5, 4)
    assert all(len(set(r.tolist())) == 4 for r in g.indices)


# ----------------------------------------------------------------------------------------------------
# Sizes, gridsize 1, determinism
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gridsize", "k", "n_groups", "b"),
    [(1, 4, None, 50), (1, 4, 7, 7), (2, 4, None, 50), (2, 4, 13, 13), (3, 8, 9, 9), (3, 10, None, 50)],
)
def test_shapes_and_dtypes(gridsize: int, k: int, n_groups: int | None, b: int) -> None:
    g = group_positions(_dyadic_positions(50, 0), gridsize, neighbor_count=k, n_groups=n_groups)
    c = gridsize * gridsize
    assert g.indices.shape == (b, c) and g.indices.dtype == np.int64
    assert g.global_offsets.shape == (b, 2) and g.global_offsets.dtype == np.float64
    assert g.relative_offsets.shape == (b, c, 2) and g.relative_offsets.dtype == np.float64
    assert (g.n_groups, g.channels, g.gridsize) == (b, c, gridsize)


def test_gridsize1_identity() -> None:
    pos = _dyadic_positions(30, 4)
    g = group_positions(pos, 1)
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(30))
    np.testing.assert_array_equal(g.global_offsets, pos)
    assert not g.relative_offsets.any()


def test_gridsize1_random_choice_is_sorted_and_distinct() -> None:
    g = group_positions(_dyadic_positions(30, 4), 1, n_groups=10, seed=9)
    idx = g.indices[:, 0]
    assert len(np.unique(idx)) == 10 and np.all(np.diff(idx) > 0)
    assert not np.array_equal(idx, np.arange(10))  # random, not the first ten
    seq = group_positions(_dyadic_positions(30, 4), 1, n_groups=10, sequential=True)
    np.testing.assert_array_equal(seq.indices[:, 0], np.arange(10))


@pytest.mark.parametrize("gridsize", [1, 2])
def test_same_seed_same_groups_different_seed_different(gridsize: int) -> None:
    pos = _dyadic_positions(100, 6)
    kw = {"n_groups": 40, "n_subsample": 80}
    a = group_positions(pos, gridsize, seed=1, **kw)
    b = group_positions(pos, gridsize, seed=1, **kw)
    c = group_positions(pos, gridsize, seed=2, **kw)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.relative_offsets, b.relative_offsets)
    assert not np.array_equal(a.indices, c.indices)


def test_seed_none_runs() -> None:
    g = group_positions(_dyadic_positions(40, 0), 2, n_groups=10, seed=None)
    assert g.indices.shape == (10, 4)


# ----------------------------------------------------------------------------------------------------
# n_subsample
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gridsize", [1, 2])
def test_n_subsample_indices_refer_to_original_points(gridsize: int) -> None:
    pos = _dyadic_positions(100, 8) + np.arange(100)[:, None] * 1000.0  # unique rows
    g = group_positions(pos, gridsize, n_subsample=30, seed=4)
    assert g.n_groups == 30
    used = np.unique(g.indices)
    assert len(used) == 30 and used.max() >= 30  # a random subset, not the first 30
    np.testing.assert_array_equal(g.member_positions(), pos[g.indices])
    # All groups live inside the same 30-point pool: every seed is one of the 30 pool points.
    np.testing.assert_array_equal(np.sort(g.indices[:, 0]), used)


def test_n_subsample_pool_independent_of_n_groups() -> None:
    pos = _dyadic_positions(100, 8)
    pool = set(np.unique(group_positions(pos, 1, n_subsample=40, seed=4).indices).tolist())
    few = group_positions(pos, 2, n_subsample=40, n_groups=10, seed=4)
    assert set(few.indices.ravel().tolist()) <= pool


def test_n_subsample_equal_to_m_keeps_all() -> None:
    g = group_positions(PLUS, 1, n_subsample=5)
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(5))


# ----------------------------------------------------------------------------------------------------
# Oversampling
# ----------------------------------------------------------------------------------------------------


def _combos(g: Groups) -> set[tuple[int, ...]]:
    return {(int(r[0]), *sorted(r[1:].tolist())) for r in g.indices}


def test_oversampling_exhausts_all_distinct_combinations() -> None:
    pos = _dyadic_positions(10, 12) + np.arange(10)[:, None] * 7.0
    max_groups = 10 * math.comb(4, 3)  # 40
    g = group_positions(pos, 2, n_groups=max_groups, neighbor_count=4, enable_oversampling=True, seed=0)
    assert g.indices.shape == (40, 4)
    assert len(_combos(g)) == 40
    np.testing.assert_array_equal(np.bincount(g.indices[:, 0], minlength=10), np.full(10, 4))
    np.testing.assert_array_equal(g.member_positions(), pos[g.indices])


def test_oversampling_balances_seeds_and_keeps_combos_unique_small_space() -> None:
    pos = _dyadic_positions(50, 13)
    g = group_positions(pos, 2, n_groups=125, neighbor_count=5, enable_oversampling=True, seed=1)
    counts = np.bincount(g.indices[:, 0], minlength=50)
    assert set(counts.tolist()) == {2, 3} and counts.sum() == 125
    assert len(_combos(g)) == 125


def test_oversampling_large_space_draw_and_reject_path() -> None:
    # 2000 * comb(12, 3) = 440,000 > 2**18 table entries: exercises the redraw-duplicates path.
    pos = _dyadic_positions(2000, 14)
    g = group_positions(pos, 2, n_groups=5000, neighbor_count=12, enable_oversampling=True, seed=2)
    assert g.indices.shape == (5000, 4)
    assert len(_combos(g)) == 5000
    assert set(np.bincount(g.indices[:, 0], minlength=2000).tolist()) == {2, 3}
    for row in g.indices[::250]:
        assert set(row[1:].tolist()) <= _k_nearest_others(pos, int(row[0]), 12)


def test_oversampling_sequential_first_group_is_nearest() -> None:
    pos = _dyadic_positions(40, 15)
    g = group_positions(pos, 2, n_groups=100, neighbor_count=5, enable_oversampling=True, sequential=True)
    nearest = group_positions(pos, 2, neighbor_count=5, sequential=True)
    first = np.unique(g.indices[:, 0], return_index=True)[1]
    np.testing.assert_array_equal(g.indices[first], nearest.indices)
    assert len(_combos(g)) == 100
    # first 100 - 2*40 = 20 seeds get the third group
    np.testing.assert_array_equal(np.bincount(g.indices[:, 0]), [3] * 20 + [2] * 20)


def test_oversampling_flag_ignored_when_not_needed() -> None:
    pos = _dyadic_positions(40, 15)
    a = group_positions(pos, 2, n_groups=20, enable_oversampling=True, seed=3)
    b = group_positions(pos, 2, n_groups=20, seed=3)
    np.testing.assert_array_equal(a.indices, b.indices)


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("positions", "match"),
    [
        (np.zeros(4), r"shape \[M, 2\].*found shape=\(4,\)"),
        (np.zeros((4, 3)), r"shape \[M, 2\].*found shape=\(4, 3\)"),
        (np.zeros((0, 2)), r"M >= 1.*found shape=\(0, 2\)"),
        (np.array([[0.0, 1.0], [np.nan, 2.0]]), r"must be finite; found 1 rows .*index 1"),
        (np.array([[0.0, np.inf]]), r"must be finite"),
        (np.array([["a", "b"]]), r"real numeric .* found shape=\(1, 2\) dtype=<U1"),
        (np.zeros((3, 2), dtype=np.complex128), r"real numeric .*complex128"),
    ],
)
def test_bad_positions_raise_data_format_error(positions: np.ndarray, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        group_positions(positions, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gridsize": 0}, r"gridsize must be an integer >= 1; found 0"),
        ({"gridsize": 2.0}, r"gridsize must be an integer >= 1; found 2\.0; pass a whole number"),
        ({"gridsize": True}, r"gridsize must be an integer >= 1; found True"),
        ({"gridsize": 1, "n_groups": 0}, r"n_groups must be an integer >= 1; found 0"),
        ({"gridsize": 2, "neighbor_count": 0}, r"neighbor_count must be an integer >= 1"),
        (
            {"gridsize": 2, "neighbor_count": 2},
            r"neighbor_count must be at least C-1 = 3 for gridsize 2.*increase neighbor_count to at least 3",
        ),
        ({"gridsize": 3}, r"at least C-1 = 8 for gridsize 3.*found 4"),
        ({"gridsize": 1, "n_subsample": 0}, r"n_subsample must be an integer >= 1"),
        ({"gridsize": 1, "n_subsample": 11}, r"n_subsample must be at most .* \(10\); found 11"),
        ({"gridsize": 1, "n_groups": 11}, r"asked for 11 groups but the scan has 10 points.*at most 10"),
        ({"gridsize": 1, "n_groups": 11, "enable_oversampling": True}, r"oversampling needs gridsize > 1"),
        (
            {"gridsize": 2, "n_groups": 11},
            r"asked for 11 groups but the scan has 10 points; set enable_oversampling=True .*lower n_groups",
        ),
        (
            {"gridsize": 2, "n_groups": 8, "n_subsample": 6},
            r"asked for 8 groups but the scan has 6 points after n_subsample",
        ),
        (
            {"gridsize": 2, "n_groups": 41, "enable_oversampling": True},
            r"asked for 41 groups but 10 points with neighbor_count=4 allow at most 10 x comb\(4, 3\) = 40",
        ),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        group_positions(_dyadic_positions(10, 0), **kwargs)


def test_too_few_points_for_gridsize() -> None:
    with pytest.raises(DataFormatError, match=r"gridsize 2 needs at least 4 scan points, got 3"):
        group_positions(PLUS[:3], 2)
    with pytest.raises(DataFormatError, match=r"gridsize 2 needs at least 4 scan points, got 3"):
        group_positions(PLUS, 2, n_subsample=3)


# ----------------------------------------------------------------------------------------------------
# Groups container and summary
# ----------------------------------------------------------------------------------------------------


def test_subset_selects_rows_consistently() -> None:
    g = group_positions(PLUS, 2, sequential=True)
    s = g.subset(np.array([4, 0]))
    np.testing.assert_array_equal(s.indices, g.indices[[4, 0]])
    np.testing.assert_array_equal(s.relative_offsets, g.relative_offsets[[4, 0]])
    np.testing.assert_array_equal(s.global_offsets, g.global_offsets[[4, 0]])
    assert g.subset(slice(1, 3)).n_groups == 2
    assert g.subset(np.array([True, False, True, False, False])).n_groups == 2
    one = g.subset(3)
    assert one.indices.shape == (1, 4) and one.gridsize == 2


def test_subset_bad_selection() -> None:
    g = group_positions(PLUS, 1)
    with pytest.raises(ConfigError, match=r"boolean mask of length 5"):
        g.subset(np.array([True, False]))
    with pytest.raises(ConfigError, match=r"integer indices in \[-5, 5\)"):
        g.subset(np.array([7]))


def test_groups_rejects_inconsistent_shapes() -> None:
    with pytest.raises(DataFormatError, match=r"expected indices \[B, 4\].*found indices shape=\(2, 1\)"):
        Groups(np.zeros((2, 1), np.int64), np.zeros((2, 2)), np.zeros((2, 1, 2)), gridsize=2)


def test_group_summary_values() -> None:
    s = group_summary(group_positions(PLUS, 2, sequential=True))
    assert s["n_groups"] == 5 and s["channels"] == 4 and s["gridsize"] == 2
    assert s["n_points_covered"] == 5
    # largest component: group 4 member 4 relative (0.5, -3.0); largest distance is |(0.5, -3)| = sqrt(9.25)
    assert s["max_abs_relative_offset_px"] == 3.0
    assert s["max_relative_distance_px"] == pytest.approx(math.sqrt(9.25))
    assert all(isinstance(v, (int, float)) for v in s.values())
    assert group_summary(group_positions(PLUS, 1))["max_abs_relative_offset_px"] == 0.0


def test_group_summary_type_error() -> None:
    with pytest.raises(TypeError, match=r"expects a Groups instance, got dict"):
        group_summary({})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# Scale
# ----------------------------------------------------------------------------------------------------


def test_two_hundred_thousand_points() -> None:
    pos = np.random.default_rng(0).uniform(0, 5000, size=(200_000, 2))
    g = group_positions(pos, 2, seed=0)
    assert g.indices.shape == (200_000, 4) and g.relative_offsets.shape == (200_000, 4, 2)
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(200_000))
    assert (g.indices[:, 1:] != g.indices[:, :1]).all()


def test_effective_neighbor_count_is_raised_to_c_minus_1() -> None:
    from ptychopinn.data.grouping import effective_neighbor_count

    assert effective_neighbor_count(1, 2) == 3
    assert effective_neighbor_count(7, 2) == 7
    assert effective_neighbor_count(0, 1) == 0
    assert effective_neighbor_count(4, 3) == 8
