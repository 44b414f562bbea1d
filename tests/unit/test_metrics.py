"""Tests for ptychopinn.metrics: alignment identities, registration, PSNR/SSIM/Pearson, FRC, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from ptychopinn import metrics as M
from ptychopinn.errors import DataFormatError

H = 64


def _texture(seed: int, sigma: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((H, H)), sigma)


@pytest.fixture
def truth() -> np.ndarray:
    """[64, 64] complex128: textured amplitude in ~[0.5, 2] and phase spanning several radians."""
    amp = 0.5 + 3.0 * _texture(1)
    phase = 4.0 * ndimage.gaussian_filter(np.random.default_rng(2).standard_normal((H, H)), 2.0)
    return amp * np.exp(1j * phase)


def _shift_complex(a: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    return ndimage.shift(a.real, shift) + 1j * ndimage.shift(a.imag, shift)


def _centred_xy() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:H, 0:H].astype(float)
    return x - (H - 1) / 2, y - (H - 1) / 2


# ------------------------------------------------------------------------------------ phase alignment
def test_global_phase_offset_is_removed(truth: np.ndarray) -> None:
    res = M.evaluate(truth * np.exp(0.7j), truth)
    assert res["phase"]["mae"] < 1e-9
    assert res["amplitude"]["mae"] < 1e-9
    assert res["phase"]["pearson"] == pytest.approx(1.0)
    assert np.allclose(M.remove_global_phase(truth * np.exp(-2.5j), truth), truth)


def test_global_phase_uses_only_mask_pixels(truth: np.ndarray) -> None:
    recon = truth * np.exp(0.4j)
    mask = np.zeros((H, H), bool)
    mask[:, : H // 2] = True
    recon[:, H // 2 :] *= np.exp(2.0j)  # garbage outside the mask must not bias the estimate
    out = M.remove_global_phase(recon, truth, mask)
    assert np.allclose(out[mask], truth[mask])


def test_phase_ramp_joint_fit_recovers_coefficients_despite_wrapping(truth: np.ndarray) -> None:
    x, y = _centred_xy()
    # 0.3 rad/px wraps the difference phase ~3 times across the image.
    recon = truth * np.exp(1j * (0.3 * x - 0.2 * y + 1.0))
    a, b, c = M.fit_phase_ramp(recon, truth)
    assert (a, b, c) == pytest.approx((0.3, -0.2, 1.0), abs=1e-9)
    assert np.allclose(M.remove_phase_ramp(recon, truth), truth)
    with_ramp = M.evaluate(recon, truth, remove_ramp=True)
    without = M.evaluate(recon, truth, remove_ramp=False)
    assert with_ramp["phase"]["mae"] < 1e-6
    assert without["phase"]["mae"] > 0.5


def test_phase_ramp_is_fitted_on_the_difference_not_on_each_phase() -> None:
    # The object itself has a strong planar phase; recon == truth, so a joint fit finds no ramp
    # (separate plane fits would remove the object's own gradient).
    x, y = _centred_xy()
    obj = (1.0 + _texture(5)) * np.exp(1j * (0.5 * x + 0.1 * y))
    assert M.fit_phase_ramp(obj, obj) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)


def test_phase_mae_wraps_difference_across_branch_cut() -> None:
    # Truth phase straddles +-pi; recon differs by a zero-mean +-0.1 rad checkerboard.
    phase = np.pi + 0.3 * (_texture(3) - 0.5) / 0.1
    truth = (1.0 + _texture(4)) * np.exp(1j * phase)
    checker = np.where((np.add.outer(np.arange(H), np.arange(H)) % 2) == 0, 0.1, -0.1)
    res = M.evaluate(truth * np.exp(1j * checker), truth, mask=np.ones((H, H), bool), align=False, border=0)
    assert res["phase"]["mae"] == pytest.approx(0.1, abs=1e-9)
    assert res["phase"]["psnr"] < M.PSNR_CAP_DB


# --------------------------------------------------------------------------------------- registration
def test_subpixel_shift_is_registered_back(truth: np.ndarray) -> None:
    moved = _shift_complex(truth, (1.3, -0.6))
    _, (dy, dx) = M.register_subpixel(moved, truth)
    assert abs(dy + 1.3) < 0.1 and abs(dx - 0.6) < 0.1
    res = M.evaluate(moved, truth)
    assert abs(res["shift_px"][0] + 1.3) < 0.1 and abs(res["shift_px"][1] - 0.6) < 0.1
    unaligned = M.evaluate(moved, truth, align=False)
    assert res["amplitude"]["mae"] < 0.5 * unaligned["amplitude"]["mae"]
    assert res["amplitude"]["ssim"] > 0.97 > unaligned["amplitude"]["ssim"]


def test_register_returns_aligned_field(truth: np.ndarray) -> None:
    moved = np.roll(truth, (3, -2), axis=(0, 1))  # periodic shift: Fourier shift undoes it exactly
    out, shift = M.register_subpixel(moved, truth)
    assert shift == pytest.approx((-3.0, 2.0), abs=0.06)
    assert np.abs(out - truth)[8:-8, 8:-8].max() < 0.1 * np.abs(truth).mean()


def test_phase_only_object_registers_through_complex_channel() -> None:
    truth = np.exp(1j * 3.0 * (_texture(7) - 0.5) / 0.15)  # flat amplitude: amplitude channel is blind
    moved = _shift_complex(truth, (-0.8, 1.4))
    res = M.evaluate(moved, truth)
    assert res["shift_px"] == pytest.approx([0.8, -1.4], abs=0.1)
    assert res["amplitude"]["pearson"] is None  # constant truth amplitude: correlation undefined
    assert res["amplitude"]["psnr"] is None and res["amplitude"]["ssim"] is None


def test_large_bogus_shift_is_rejected_with_warning(truth: np.ndarray) -> None:
    other = np.abs(truth).mean() * np.exp(1j * np.angle(truth))  # flat amplitude: nothing to register
    with pytest.warns(RuntimeWarning, match="registration failed"):
        res = M.evaluate(other, truth)
    assert res["shift_px"] == [0.0, 0.0]


# ---------------------------------------------------------------------------- metric values and JSON
def test_psnr_matches_formula_and_identity_is_capped() -> None:
    amp = 0.5 + _texture(8)
    phase = 0.5 * _texture(9)
    truth = amp * np.exp(1j * phase)
    e = 0.01
    checker = np.where((np.add.outer(np.arange(H), np.arange(H)) % 2) == 0, e, -e)  # zero mean: scale = 1
    recon = (amp + checker) * np.exp(1j * phase)
    res = M.evaluate(recon, truth, mask=np.ones((H, H), bool), align=False, border=0)
    data_range = amp.max() - amp.min()
    assert res["amplitude_scale"] == pytest.approx(1.0, abs=1e-12)
    assert res["amplitude"]["mae"] == pytest.approx(e)
    assert res["amplitude"]["psnr"] == pytest.approx(20 * math.log10(data_range / e))
    same = M.evaluate(truth, truth)
    assert same["amplitude"]["psnr"] == M.PSNR_CAP_DB == same["phase"]["psnr"]
    assert same["amplitude"]["ssim"] == pytest.approx(1.0)


def test_amplitude_global_scale_is_removed(truth: np.ndarray) -> None:
    res = M.evaluate(3.7 * truth, truth)
    assert res["amplitude_scale"] == pytest.approx(1 / 3.7)
    assert res["amplitude"]["mae"] < 1e-9


def test_flat_reconstruction_has_zero_pearson_but_plausible_mae(truth: np.ndarray) -> None:
    rng = np.random.default_rng(11)
    amp = np.abs(truth)
    flat = (amp.mean() + 1e-3 * rng.standard_normal((H, H))) * np.exp(1j * np.angle(truth))
    good = (amp + 0.05 * rng.standard_normal((H, H))) * np.exp(1j * np.angle(truth))
    r_flat = M.evaluate(flat, truth, align=False)
    r_good = M.evaluate(good, truth, align=False)
    assert abs(r_flat["amplitude"]["pearson"]) < 0.15
    assert r_good["amplitude"]["pearson"] > 0.9
    exact = M.evaluate(np.full((H, H), amp.mean()) * np.exp(1j * np.angle(truth)), truth, align=False)
    assert exact["amplitude"]["pearson"] == 0.0


def test_mask_excludes_unscanned_pixels_and_sets_region(truth: np.ndarray) -> None:
    recon = np.zeros_like(truth)
    recon[10:50, 12:60] = truth[10:50, 12:60] * np.exp(0.3j)  # default mask = |recon| > 0
    res = M.evaluate(recon, truth, align=False, border=2)
    assert res["region"] == {"rows": [12, 48], "cols": [14, 58]}
    assert res["phase"]["mae"] < 1e-9
    # Garbage outside an explicit mask is ignored by the pixel metrics.
    noisy = truth + 5.0 * (np.random.default_rng(3).random((H, H)) > 0.5)
    mask = np.zeros((H, H), bool)
    mask[20:40, 20:40] = True
    noisy[mask] = truth[mask]
    res2 = M.evaluate(noisy, truth, mask=mask, align=False, border=0)
    assert res2["amplitude"]["mae"] < 1e-9
    assert res2["region"] == {"rows": [20, 40], "cols": [20, 40]}


def test_result_is_json_serialisable_with_plain_types(truth: np.ndarray) -> None:
    res = M.evaluate(_shift_complex(truth, (0.4, 0.2)), truth, remove_ramp=True)
    text = json.dumps(res, allow_nan=False)
    back = json.loads(text)
    assert set(back) >= {"amplitude", "phase", "shift_px", "region", "frc"}
    for ch in ("amplitude", "phase"):
        assert set(back[ch]) == {
            "mae",
            "psnr",
            "ssim",
            "pearson",
            "frc_resolution_px_half_bit",
            "frc_resolution_px_0.5",
        }
        assert all(type(v) is float for v in res[ch].values())
    n = len(res["frc"]["freq"])
    assert n > 10 and all(len(res["frc"][k]) == n for k in ("amplitude", "phase", "half_bit"))


def test_align_for_comparison_returns_matching_crops(truth: np.ndarray) -> None:
    moved = _shift_complex(truth, (1.0, 0.5)) * np.exp(0.9j)
    rc, tc, info = M.align_for_comparison(moved, truth)
    assert rc.shape == tc.shape == info.mask.shape
    (r0, r1), (c0, c1) = info.region
    assert np.array_equal(tc, truth[r0:r1, c0:c1])
    assert np.abs(rc - tc)[info.mask].mean() < 0.05 * np.abs(tc).mean()


# ------------------------------------------------------------------------------------------------- FRC
def test_frc_of_image_with_itself_is_one() -> None:
    img = _texture(12, sigma=0.7)
    freq, curve = M.frc(img, img)
    assert freq[0] == 0.0 and freq[-1] == pytest.approx(0.5)
    assert np.all(curve > 1 - 1e-9)
    assert M.frc_resolution(freq, curve, M.ring_pixel_counts(H), "half-bit") == pytest.approx(2.0)


def test_frc_of_independent_noise_is_low() -> None:
    rng = np.random.default_rng(13)
    _, curve = M.frc(rng.random((H, H + 6)), rng.random((H, H + 6)))  # non-square: centre-cropped
    assert curve.shape == (H // 2 + 1,)
    assert curve[1:].mean() < 0.2


def test_blurred_image_has_worse_frc_resolution() -> None:
    rng = np.random.default_rng(14)
    ref = _texture(15, sigma=0.8)
    noise = 0.08 * rng.standard_normal((H, H))
    counts = M.ring_pixel_counts(H)
    sharp = M.frc_resolution(*M.frc(ref + noise, ref), counts, "half-bit")
    blurred = M.frc_resolution(*M.frc(ndimage.gaussian_filter(ref, 2.0) + noise, ref), counts, "half-bit")
    assert blurred > sharp + 1.0


def test_frc_resolution_interpolates_caps_and_reports_nyquist() -> None:
    freq = np.arange(33) / 64
    counts = M.ring_pixel_counts(64)
    linear = 1 - np.arange(33) / 31  # crosses 0.5 at ring 15.5
    assert M.frc_resolution(freq, linear, counts, "0.5") == pytest.approx(64 / 15.5)
    assert M.frc_resolution(freq, np.ones(33), counts, "0.5") == pytest.approx(2.0)
    step = np.zeros(33)
    step[0] = 1.0  # fails at the first ring: 1/f would be 128 px, capped at the 64 px side
    assert M.frc_resolution(freq, step, counts, "half-bit") == pytest.approx(64.0)


def test_half_bit_threshold_and_ring_counts() -> None:
    assert M.half_bit_threshold(np.array([1]))[0] == pytest.approx(1.0)
    assert M.half_bit_threshold(np.array([10**12]))[0] == pytest.approx(0.2071 / 1.2071, abs=1e-5)
    counts = M.ring_pixel_counts(64)
    k = np.arange(64) - 32
    assert counts[0] == 1 and counts.sum() == np.count_nonzero(np.rint(np.hypot(*np.meshgrid(k, k))) <= 32)


def test_tukey_window_shape_and_taper() -> None:
    w = M.tukey_window_2d((8, 16))
    assert w.shape == (8, 16) and w.min() == 0.0 and w.max() == 1.0
    assert np.allclose(M.tukey_window_2d((5, 5), alpha=0.0), 1.0)


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("recon", "truth"),
    [
        (np.ones((8, 9), complex), np.ones((9, 9), complex)),  # shape mismatch
        (np.ones((9, 9)), np.ones((9, 9), complex)),  # not complex
        (np.full((9, 9), np.nan + 0j), np.ones((9, 9), complex)),  # NaN
        (np.ones((2, 9, 9), complex), np.ones((2, 9, 9), complex)),  # not 2-D
    ],
)
def test_bad_images_raise_one_line_data_format_error(recon: np.ndarray, truth: np.ndarray) -> None:
    with pytest.raises(DataFormatError) as info:
        M.evaluate(recon, truth)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value) and "expected" in str(info.value)


def test_bad_arguments_raise(truth: np.ndarray) -> None:
    with pytest.raises(DataFormatError, match="mask"):
        M.evaluate(truth, truth, mask=np.ones((3, 3), bool))
    with pytest.raises(DataFormatError, match="mask"):
        M.evaluate(truth, truth, mask=np.zeros((H, H), bool))
    with pytest.raises(DataFormatError, match="all zeros"):
        M.evaluate(np.zeros_like(truth), truth)
    with pytest.raises(DataFormatError, match="region"):
        M.evaluate(truth, truth, border=30)
    with pytest.raises(DataFormatError, match="real"):
        M.frc(truth, truth)
    with pytest.raises(DataFormatError, match="threshold"):
        M.frc_resolution(np.arange(5) / 8, np.ones(5), np.ones(5), "1/7")  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match="channel"):
        M.register_subpixel(truth, truth, channel="phase")  # type: ignore[arg-type]


def test_import_is_cheap() -> None:
    code = (
        "import sys, ptychopinn.metrics, ptychopinn.plots; "
        "bad = [m for m in ('matplotlib', 'torch', 'skimage') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
