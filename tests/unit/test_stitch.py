"""Stitching: exactness, orientation, streaming and canvas geometry (src/ptychopinn/inference/stitch.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.inference.stitch import Stitcher, canvas_geometry, crop_window, shifted_windows, stitch_patches
from ptychopinn.physics.patches import extract_patches
from ptychopinn.physics.shift import fourier_shift


def _random_object(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.0, (h, w)) * np.exp(1j * rng.uniform(-2, 2, (h, w)))).astype(np.complex64)


def _raster(x0: float, y0: float, step: float, nx: int, ny: int) -> np.ndarray:
    xs, ys = np.meshgrid(x0 + step * np.arange(nx), y0 + step * np.arange(ny))
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def _cut(obj: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
    """Patches cut with numpy slicing at integer positions, independent of extract_patches."""
    out = np.zeros((len(pos), n, n), dtype=obj.dtype)
    for i, (x, y) in enumerate(pos.astype(int)):
        out[i] = obj[y - n // 2:y - n // 2 + n, x - n // 2:x - n // 2 + n]
    return out


def test_true_patches_at_integer_positions_reproduce_the_object() -> None:
    obj = _random_object(90, 100)
    n, window = 24, 12
    pos = _raster(20, 18, 7, 9, 8)  # step 7 < window 12: windows overlap and tile the scanned region
    patches = extract_patches(torch.from_numpy(obj), torch.from_numpy(pos), n)
    rec, cov = stitch_patches(patches, pos, window, shape=obj.shape)
    assert rec.dtype == np.complex64 and cov.dtype == np.float32
    assert rec.shape == cov.shape == obj.shape
    covered = cov > 0
    # The scanned region: from the first window's top-left to the last window's bottom-right.
    region = np.zeros(rec.shape, bool)
    region[18 - 6:18 + 7 * 7 - 6 + 12, 20 - 6:20 + 7 * 8 - 6 + 12] = True
    assert covered[region].all()
    np.testing.assert_allclose(rec[region], obj[region], rtol=0, atol=2e-6)
    assert np.all(rec[~covered] == 0)
    # Coverage counts windows: 1 at the outer corner, more in the overlaps.
    assert cov[12, 14] == pytest.approx(1.0)
    assert cov[region].max() >= 2.0


def test_subpixel_positions_reproduce_a_smooth_object() -> None:
    h, w = 96, 96

    def smooth(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return ((0.75 + 0.2 * np.sin(2 * np.pi * xx / 48) * np.cos(2 * np.pi * yy / 40))
                * np.exp(1j * 0.8 * np.sin(2 * np.pi * (xx + yy) / 64)))

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    obj = smooth(yy, xx).astype(np.complex64)
    rng = np.random.default_rng(1)
    pos = _raster(20, 20, 6, 10, 10) + rng.uniform(-0.5, 0.5, (100, 2))
    # Patches sampled from the formula at the exact sub-pixel points: pixel (r, c) is object point
    # (y - 16 + r, x - 16 + c). Independent of any shift or interpolation code.
    grid = np.arange(32, dtype=np.float64) - 16
    patches = np.stack([smooth(y + grid[:, None], x + grid[None, :]) for x, y in pos]).astype(np.complex64)
    rec, cov = stitch_patches(patches, pos, 16)
    # default geometry: origin (0, 0), up to the far edge of the last window at its rounded position
    far = np.floor(pos.max(axis=0) + 0.5).astype(int) - 8 + 15
    assert rec.shape == (far[1] + 1, far[0] + 1)
    rec = np.pad(rec, ((0, h - rec.shape[0]), (0, w - rec.shape[1])))
    cov = np.pad(cov, ((0, h - cov.shape[0]), (0, w - cov.shape[1])))
    interior = np.zeros(rec.shape, bool)
    interior[20:74, 20:74] = True
    assert (cov[interior] > 1.0).all()
    assert np.all(cov == np.round(cov))  # integer placement: coverage counts whole windows
    err = np.abs(rec[interior] - obj[interior])
    # Placement is exact up to what leaks in from the border of each (non-periodic) 32-px patch, 8 px from
    # the window (measured 7e-5; a circular shift without the mirror extension gives 0.02, bilinear 0.02).
    assert err.max() < 5e-4, err.max()
    assert err.mean() < 1e-4, err.mean()


@pytest.mark.parametrize("n, window", [(32, 10), (33, 11), (16, 16)])
def test_shifted_windows_are_the_fourier_shift_of_the_mirrored_patch(n: int, window: int) -> None:
    rng = np.random.default_rng(7)
    p = torch.from_numpy((rng.standard_normal((6, n, n)) + 1j * rng.standard_normal((6, n, n))).astype(np.complex64))
    frac = torch.tensor([[0.3, -0.2], [-0.5, 0.45], [0.0, 0.0], [0.0, 0.25], [-0.1, 0.0], [0.49, -0.5]],
                        dtype=torch.float64)
    mirrored = torch.cat([p, p.flip(-1)], dim=-1)
    mirrored = torch.cat([mirrored, mirrored.flip(-2)], dim=-2)  # [6, 2n, 2n], half-sample symmetric
    expected = crop_window(fourier_shift(mirrored, frac)[:, :n, :n], window)
    got = shifted_windows(p, frac, window)
    assert got.shape == (6, window, window) and got.dtype == torch.complex64
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(got[2], crop_window(p, window)[2], atol=0, rtol=0)  # zero fraction: a plain crop
    assert got.data_ptr() != p.data_ptr()


def test_subpixel_position_moves_the_content_by_its_fraction() -> None:
    """A blob on the patch centre lands exactly on a fractional position (centroid, both axes)."""
    n, window = 32, 20
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    blob = np.exp(-((xx - n // 2) ** 2 + (yy - n // 2) ** 2) / (2 * 2.0**2)).astype(np.complex64)
    pos = np.array([[30.3, 21.8], [12.0, 40.5]])  # (x, y)
    for x, y in pos:
        rec, cov = stitch_patches(blob[None], np.array([[x, y]]), window, shape=(64, 64))
        amp = rec.real.astype(np.float64)
        r, c = np.mgrid[0:64, 0:64]
        assert (amp * c).sum() / amp.sum() == pytest.approx(x, abs=1e-3)
        assert (amp * r).sum() / amp.sum() == pytest.approx(y, abs=1e-3)
        # the window sits at the rounded position: rows/cols round(pos) - 10 ... round(pos) + 9
        rows, cols = np.flatnonzero(cov.any(axis=1)), np.flatnonzero(cov.any(axis=0))
        assert (rows[0], cols[0]) == (np.floor(y + 0.5) - 10, np.floor(x + 0.5) - 10)
        assert cov.sum() == window * window


def test_orientation_no_flip_transpose_or_reflection() -> None:
    # An 'F' made of pixels at known (row, col): any flip, transpose or point reflection moves them.
    obj = np.zeros((64, 80), dtype=np.complex64)
    obj[20:36, 40] = 1.0 + 0.5j          # vertical stem at column 40
    obj[20, 40:50] = 2.0                 # top bar to the right
    obj[27, 40:46] = 3.0j                # middle bar, shorter
    obj[33, 47] = 4.0                    # single marker
    n, window = 32, 24
    pos = np.array([[42.0, 24.0], [48.0, 30.0], [38.0, 31.0]])  # (x, y), not collinear
    patches = _cut(obj, pos, n)
    rec, cov = stitch_patches(patches, pos, window, shape=obj.shape)
    covered = cov > 0
    np.testing.assert_allclose(rec[covered], obj[covered], atol=1e-6)
    assert rec[33, 47] == pytest.approx(4.0)
    assert rec[27, 44] == pytest.approx(3.0j)
    assert rec[20, 49] == pytest.approx(2.0)
    assert abs(rec[47, 33]) < 1e-6 and abs(rec[49, 20]) < 1e-6   # transposed spots are empty
    # A single patch lands with its centre pixel on (row=y, col=x).
    single = np.zeros((1, n, n), np.complex64)
    single[0, n // 2, n // 2] = 7.0
    single[0, n // 2 + 3, n // 2 - 2] = 9.0   # 3 rows down, 2 columns left of the centre
    rec1, _ = stitch_patches(single, np.array([[42.0, 24.0]]), window, shape=obj.shape)
    assert rec1[24, 42] == pytest.approx(7.0)
    assert rec1[27, 40] == pytest.approx(9.0)


@pytest.mark.parametrize("window", [5, 6, 20, 21])
def test_crop_window_keeps_the_centre_pixel(window: int) -> None:
    n = 32
    p = torch.zeros(1, n, n, dtype=torch.complex64)
    p[0, n // 2, n // 2] = 1.0
    c = crop_window(p, window)
    assert c.shape == (1, window, window)
    assert c[0, window // 2, window // 2] == 1.0 and c.abs().sum() == 1.0


def test_streaming_in_batches_equals_one_shot() -> None:
    obj = _random_object(70, 70, seed=3)
    rng = np.random.default_rng(2)
    pos = rng.uniform(15, 55, (53, 2))
    patches = extract_patches(torch.from_numpy(obj), torch.from_numpy(pos), 16)
    shape, origin = canvas_geometry(pos, 16, 10)
    one_obj, one_cov = stitch_patches(patches, pos, 10, shape=shape, origin=origin)
    st = Stitcher(shape, 10, origin=origin)
    for start in range(0, 53, 7):
        st.add(patches[start:start + 7].numpy(), torch.from_numpy(pos[start:start + 7]))
    assert st.n_patches == 53
    b_obj, b_cov = st.result()
    np.testing.assert_allclose(b_cov, one_cov, atol=1e-5)
    np.testing.assert_allclose(b_obj, one_obj, atol=1e-5)
    # result() does not consume the accumulators
    again, _ = st.result()
    np.testing.assert_array_equal(again, b_obj)


def test_canvas_geometry_default_origin_is_the_object_grid() -> None:
    pos = np.array([[30.0, 12.0], [50.5, 40.0]])
    shape, origin = canvas_geometry(pos, 32, 20)
    assert origin == (0.0, 0.0)
    # Windows span columns 20 .. 50.5+9 (bilinear spill to 60) and rows 2 .. 40+9.
    assert shape == (50, 61)
    assert canvas_geometry(pos, 32, 20, object_shape=(128, 96)) == ((128, 96), (0.0, 0.0))


def test_canvas_geometry_negative_positions_shift_the_origin() -> None:
    pos = np.array([[-3.0, -5.0], [10.0, 4.0], [2.0, 8.0]])
    shape, origin = canvas_geometry(pos, 16, 8)
    assert origin == (-7.0, -9.0)
    assert all(float(o).is_integer() for o in origin)
    assert shape == (8 + 3 + 9 + 1, 10 + 3 + 7 + 1)  # rows -9 .. 8+3, cols -7 .. 10+3
    p = np.zeros((3, 16, 16), np.complex64)
    p[:, 8, 8] = [1.0, 2.0, 3.0]
    p[0, 4, 4] = 5.0  # top-left corner of the first window: object pixel (row=-9, col=-7)
    rec, cov = stitch_patches(p, pos, 8, shape=shape, origin=origin)
    # canvas (row, col) is object (y0 + row, x0 + col)
    assert rec[-5 - -9, -3 - -7] == pytest.approx(1.0)
    assert rec[4 + 9, 10 + 7] == pytest.approx(2.0)
    assert rec[8 + 9, 2 + 7] == pytest.approx(3.0)
    assert rec[0, 0] == pytest.approx(5.0)
    # Nothing was clipped: total coverage is 3 full windows.
    assert cov.sum() == pytest.approx(3 * 64)
    # stitch_patches without a shape finds the same geometry.
    rec2, _ = stitch_patches(p, pos, 8)
    np.testing.assert_array_equal(rec2, rec)


def test_windows_outside_a_given_object_shape_are_clipped() -> None:
    p = np.ones((1, 16, 16), np.complex64)
    rec, cov = stitch_patches(p, np.array([[1.0, 1.0]]), 8, shape=(10, 10))
    assert cov.sum() == pytest.approx(25.0)  # rows/cols 0..4 of the 8x8 window centred at (1, 1)
    assert np.all(rec[cov > 0] == 1.0)


def test_bad_input_raises_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="at most the patch size"):
        stitch_patches(np.ones((1, 8, 8), np.complex64), np.zeros((1, 2)), 12)
    with pytest.raises(DataFormatError, match="one \\(x, y\\) per patch"):
        stitch_patches(np.ones((2, 8, 8), np.complex64), np.zeros((3, 2)), 4)
    with pytest.raises(DataFormatError, match="\\[P, 2\\]"):
        Stitcher((8, 8), 4).add(np.ones((2, 8, 8), np.complex64), np.zeros((2, 3)))
    with pytest.raises(DataFormatError, match="finite"):
        canvas_geometry(np.array([[np.nan, 1.0]]), 8, 4)
    with pytest.raises(ConfigError, match="positive integer"):
        Stitcher((8, 8), 0)
    with pytest.raises(ConfigError) as info:
        stitch_patches(np.ones((1, 8, 8), np.complex64), np.zeros((1, 2)), 12)
    assert "\n" not in str(info.value)


def test_buffered_windows_are_copies_and_flush_size_does_not_change_the_result() -> None:
    obj = _random_object(60, 60, seed=4)
    rng = np.random.default_rng(5)
    pos = rng.uniform(15, 45, (40, 2))
    patches = extract_patches(torch.from_numpy(obj), torch.from_numpy(pos), 16)
    shape, origin = canvas_geometry(pos, 16, 8)
    results = []
    for flush in (1, 7, 1024):
        st = Stitcher(shape, 8, origin=origin, flush_size=flush)
        buf = torch.empty(10, 16, 16, dtype=torch.complex64)
        for start in range(0, 40, 10):
            buf.copy_(patches[start:start + 10])  # the caller reuses one batch buffer
            st.add(buf, pos[start:start + 10])
        buf.zero_()
        results.append(st.result())
    for obj_b, cov_b in results[1:]:
        np.testing.assert_allclose(obj_b, results[0][0], atol=1e-5)
        np.testing.assert_allclose(cov_b, results[0][1], atol=1e-5)
    ref, _ = stitch_patches(patches, pos, 8, shape=shape, origin=origin)
    np.testing.assert_allclose(results[-1][0], ref, atol=1e-5)
    assert np.abs(results[-1][0]).max() > 0.4


def test_tapered_weights_keep_consistent_patches_exact_and_count_coverage() -> None:
    """A centre-weighted average of consistent windows is still the object; weights are >= 1."""
    from ptychopinn.inference.stitch import Stitcher

    rng = np.random.default_rng(5)
    obj = (rng.uniform(0.5, 1.0, (40, 44)) * np.exp(1j * rng.uniform(-1, 1, (40, 44)))).astype(np.complex64)
    pos = np.array([[x, y] for y in range(10, 31, 4) for x in range(10, 35, 4)], dtype=np.float64)
    patches = extract_patches(torch.from_numpy(obj), torch.from_numpy(pos), 16)
    plain, tapered = Stitcher((40, 44), 8), Stitcher((40, 44), 8, taper=10.0)
    for st in (plain, tapered):
        st.add(patches, pos)
    (o0, c0), (o1, c1) = plain.result(), tapered.result()
    covered = c0 > 0
    np.testing.assert_allclose(o1[covered], obj[covered], atol=1e-5)
    np.testing.assert_allclose(o1[covered], o0[covered], atol=1e-5)
    assert ((c1 >= c0 - 1e-5) | ~covered).all() and c1.max() > c0.max()
    assert tapered.weight.min() >= 1.0 and 10.0 < tapered.weight.max() <= 11.0
    with pytest.raises(ConfigError, match="taper"):
        Stitcher((4, 4), 2, taper=-1.0)


def test_positions_in_wrong_units_are_refused_before_allocating() -> None:
    pos = np.array([[10.0, 10.0], [1e9, 12.0]])
    with pytest.raises(DataFormatError, match="check the scan positions are in object pixels"):
        canvas_geometry(pos, 32, 10)
