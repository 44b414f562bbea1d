"""Refinement on data the ideal set-up does not give: a probe estimated from the data (in focus and out of
focus), a given probe that is wrong, object amplitudes in transmission units, and scan positions many pixels
off. Physics checks against the ground truth of small simulated scans; the floors are measured values less a
margin (the measured value is in each comment)."""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import pytest
import torch

from helpers import ssim_on_scanned_region
from ptychopinn.config import RefineConfig
from ptychopinn.data.normalize import transmission_level
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError
from ptychopinn.io.probe import PROBE_ESTIMATED, aperture, estimate_probe, mean_far_field
from ptychopinn.metrics import on_truth_grid
from ptychopinn.physics.fft import ifft2c
from ptychopinn.refine import refine_onto, refine_scan
from ptychopinn.refine.positions import position_errors, search_offsets
from ptychopinn.refine.rpie import RPIE
from ptychopinn.simulate import (
    make_object,
    make_probe,
    probe_diameter,
    raster_positions,
    realistic_position_errors,
    simulate_diffraction,
    step_for_overlap,
    zone_plate_probe,
)

N = 32


@functools.cache
def _scan(kind: str, size: int = 80, free_space: bool = False, photons: float = 1e6) -> ScanData:
    probe = make_probe("focused", N) if kind == "focused" else zone_plate_probe(N, 7.0, focus=3.0)
    img = make_object("image", size, amplitude_range=(0.5, 1.0), phase_range=(-1.0, 1.0), image_name="astronaut",
                      phase_image="coins")
    obj = img
    if free_space:  # transmission 1 on half of a checkerboard, absorbing and phase-shifting on the other
        a = (np.abs(img) - np.abs(img).min()) / np.ptp(np.abs(img))
        yy, xx = np.mgrid[:size, :size]
        free = (xx // 12 + yy // 12) % 2 == 0
        obj = (np.where(free, 1.0, 0.6 + 0.3 * a) * np.exp(1j * np.where(free, 0.0, 0.8 * a))).astype(np.complex64)
    pos = raster_positions(obj.shape, N, step_for_overlap(probe_diameter(probe), 0.7), jitter=0.5, seed=0)
    amp, _, _ = simulate_diffraction(obj, probe, pos, nphotons=photons, seed=0)
    return ScanData(diffraction=amp, positions=pos, probe=probe, obj=obj)


def _blind(scan: ScanData, **changes: object) -> ScanData:
    return dataclasses.replace(scan, obj=None, patches=None, **changes)


def _estimated(scan: ScanData) -> ScanData:
    """The scan as ``--probe estimate`` loads it."""
    return _blind(scan, probe=estimate_probe(scan.diffraction), metadata={PROBE_ESTIMATED: True})


# ------------------------------------------------------------------------------------------ probe start
def test_estimated_probe_of_a_defocused_zone_plate_gives_the_object() -> None:
    """The zero-phase estimate of a defocused probe is a focused spot: refined from it, the object comes out
    as dots. The defocus chosen by the trial starts the probe close enough for refinement to recover it."""
    scan = _scan("defocused")
    res = refine_scan(_estimated(scan), RefineConfig(iterations=30))
    assert res.engine == "rpie" and res.notes["probe"].startswith("refined")
    assert abs(res.notes["probe_search"]["radius_fraction"]) > 0  # a defocused candidate won
    amp, phase = ssim_on_scanned_region(res.obj, res.origin, scan)
    zero = ifft2c(torch.from_numpy(mean_far_field(scan.diffraction).astype(np.complex64))).numpy()
    before = refine_scan(_blind(scan, probe=zero), RefineConfig(iterations=30, refine_probe=True))
    amp0, phase0 = ssim_on_scanned_region(before.obj, before.origin, scan)
    # measured: 0.839 / 0.973 with the chosen defocus, 0.065 / 0.008 from the zero-phase estimate
    assert amp >= 0.75 and phase >= 0.9, (amp, phase)
    assert amp >= amp0 + 0.5 and phase >= phase0 + 0.5, (amp0, phase0, amp, phase)


def test_estimated_probe_in_focus_gives_the_object() -> None:
    scan = _scan("focused")
    res = refine_scan(_estimated(scan), RefineConfig(iterations=30))
    amp, phase = ssim_on_scanned_region(res.obj, res.origin, scan)
    # measured: 0.943 / 0.994
    assert amp >= 0.88 and phase >= 0.96, (amp, phase)


def test_estimate_keeps_the_aperture_and_cuts_the_light_outside_it() -> None:
    scan = _scan("defocused")
    probe = estimate_probe(scan.diffraction)
    far = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(probe), norm="ortho")))
    mean = mean_far_field(scan.diffraction)
    inside = mean >= 0.5 * mean.max()
    np.testing.assert_allclose(far[inside], mean[inside], rtol=1e-3)
    outside = aperture(mean) < 1e-4
    assert outside.any() and far[outside].max() < 1e-3 * far.max()
    # energy: the mean pattern's counts inside the aperture
    assert np.sum(np.abs(probe) ** 2) <= np.sum(mean**2) * (1 + 1e-5)


# ------------------------------------------------------------------------------ whether to refine the probe
def test_auto_keeps_a_correct_probe_and_refines_a_wrong_one(caplog: pytest.LogCaptureFixture) -> None:
    scan = _scan("focused")
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        kept = refine_scan(_blind(scan), RefineConfig(iterations=5))
    assert kept.engine == "cg" and kept.notes["probe"].startswith("kept as given"), kept.notes
    trial = kept.notes["probe_trial"]
    # measured (held-out misfit): 0.00406 fixed, 0.00429 refined
    assert trial["misfit_refined"] > 0.9 * trial["misfit_fixed"], trial
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)

    n = scan.N
    yy, xx = np.mgrid[:n, :n] - n / 2
    wrong = (scan.probe * np.exp(0.02j * (xx**2 + yy**2))).astype(np.complex64)  # a defocus error
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        fixed = refine_scan(_blind(scan, probe=wrong), RefineConfig(iterations=30, refine_probe=False))
        auto = refine_scan(_blind(scan, probe=wrong), RefineConfig(iterations=30))
    assert auto.engine == "rpie" and auto.notes["probe"].startswith("refined: the given probe"), auto.notes
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not explain the data" in warnings[0], warnings
    trial = auto.notes["probe_trial"]
    # measured (held-out misfit): 0.416 fixed, 0.0053 refined
    assert trial["misfit_refined"] < 0.1 * trial["misfit_fixed"], trial
    amp_f, ph_f = ssim_on_scanned_region(fixed.obj, fixed.origin, scan)
    amp_a, ph_a = ssim_on_scanned_region(auto.obj, auto.origin, scan)
    assert amp_a > amp_f + 0.0 and ph_a > ph_f + 0.0, (amp_f, ph_f, amp_a, ph_a)


def test_auto_keeps_the_probe_when_the_cg_engine_is_named() -> None:
    scan = _scan("focused")
    n = scan.N
    yy, xx = np.mgrid[:n, :n] - n / 2
    wrong = (scan.probe * np.exp(0.02j * (xx**2 + yy**2))).astype(np.complex64)
    res = refine_scan(_blind(scan, probe=wrong), RefineConfig(iterations=2, engine="cg"))
    assert res.engine == "cg" and not res.probe_refined


def test_trials_score_patterns_they_did_not_fit() -> None:
    """The held-out patterns lie in the inner half of the trial subset (nearest the middle first), so the fitted
    patterns surround them; a probe that fits its own patterns alone predicts them badly."""
    from ptychopinn.refine.probe_choice import HOLD_OUT_EVERY, held_out, trial_misfit, trial_subset

    hold = held_out(128)
    assert hold.sum() == 64 // HOLD_OUT_EVERY and not hold[64:].any()
    scan = _scan("focused")
    sub = scan.subset(trial_subset(scan))
    right = trial_misfit(sub, scan.probe, RefineConfig(), refine_probe=False)
    n = scan.N
    spot = np.zeros((n, n), np.complex64)
    spot[n // 2 - 1:n // 2 + 1, n // 2 - 1:n // 2 + 1] = 1.0  # same data, a 2 px probe
    spot *= np.sqrt(np.sum(np.abs(scan.probe) ** 2) / np.sum(np.abs(spot) ** 2))
    wrong = trial_misfit(sub, spot, RefineConfig(), refine_probe=False)
    # measured: 0.0041 for the true probe, 7.1 for the spot
    assert right < 0.01 * wrong, (right, wrong)


def test_refine_probe_setting_is_checked() -> None:
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="refine_probe"):
            RefineConfig(refine_probe=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="position_search_radius"):
        RefineConfig(position_search_radius=-1)
    assert RefineConfig().refine_probe == "auto"
    assert RefineConfig.from_dict(RefineConfig(refine_probe=False).to_dict()).refine_probe is False


# ------------------------------------------------------------------------------------ transmission units
def test_transmission_level_is_the_free_space_amplitude() -> None:
    rng = np.random.default_rng(0)
    amp = np.where(rng.random((200, 200)) < 0.3, 1.0, rng.uniform(0.3, 0.9, (200, 200)))
    amp = amp * (1 + 0.03 * rng.standard_normal(amp.shape))  # 3 % noise
    obj = 42.0 * amp * np.exp(1j * rng.uniform(-1, 1, amp.shape))
    assert transmission_level(obj) == pytest.approx(42.0, rel=0.02)
    cov = np.zeros(amp.shape, np.float32)
    cov[50:150, 50:150] = 1.0
    obj[:50] = 1e3  # bright, but not illuminated
    assert transmission_level(obj, cov) == pytest.approx(42.0, rel=0.02)
    assert transmission_level(np.zeros((4, 4), np.complex64)) == 1.0


def test_refined_object_is_one_where_the_sample_is_empty_whatever_the_probe_units() -> None:
    scan = _scan("focused", free_space=True)
    free = np.abs(scan.obj) > 0.999
    levels = []
    for factor in (1.0, 37.0):
        res = refine_scan(_blind(scan, probe=(scan.probe * np.float32(factor)).astype(np.complex64)),
                          RefineConfig(iterations=30, refine_probe=False))
        full, covered = on_truth_grid(res.obj, res.coverage, res.origin, scan.obj.shape)
        # measured: free space 0.998 / 0.996, sample / truth 1.002 / 1.000 (probe x1 / x37)
        assert np.median(np.abs(full[covered & free])) == pytest.approx(1.0, abs=0.02)
        sample = np.abs(full[covered & ~free]) / np.abs(scan.obj[covered & ~free])
        assert np.median(sample) == pytest.approx(1.0, abs=0.02)
        levels.append(res.transmission)
        # the model of the data is unchanged: the probe takes the factor the object gave up
        np.testing.assert_allclose(res.probe, scan.probe * np.float32(factor * res.transmission), rtol=1e-5,
                                   atol=1e-6 * factor * res.transmission)
    assert levels[1] == pytest.approx(levels[0] / 37.0, rel=0.01)  # measured 0.2 % apart (histogram bins)


def test_refine_onto_keeps_the_start_units() -> None:
    scan = _scan("focused", free_space=True)
    start = np.full((scan.obj.shape[0] + 20, scan.obj.shape[1] + 20), 0.5, np.complex64)
    out = refine_onto(_blind(scan), start, (-10.0, -10.0), RefineConfig(iterations=20, refine_probe=False))
    free = np.zeros(out.shape, bool)
    free[10:-10, 10:-10] = np.abs(scan.obj) > 0.999
    lo = np.floor(scan.positions.min(axis=0)).astype(int) + 10
    hi = np.ceil(scan.positions.max(axis=0)).astype(int) + 10
    region = np.zeros(out.shape, bool)
    region[lo[1]:hi[1], lo[0]:hi[0]] = True
    # the start is 0.5 everywhere; the refined values stay in its units (0.564 in free space: the flat start's
    # level is the sample's mean transmission, not free space), far from transmission units (1)
    assert np.median(np.abs(out[region & free])) == pytest.approx(0.56, abs=0.08)


# ------------------------------------------------------------------------------------------- positions
def test_search_finds_whole_pixel_offsets_of_many_pixels() -> None:
    """With the true object, the search puts every pattern back, whatever its offset up to the radius (the
    scan's edge included: trial windows stay inside the given scan's bounding box)."""
    scan = _scan("defocused")
    rng = np.random.default_rng(3)
    off = rng.integers(-12, 13, size=scan.positions.shape).astype(np.float64)
    r = RPIE(_blind(scan, positions=scan.positions + off),
             RefineConfig(refine_positions=True, position_search_radius=16, refine_probe=False))
    canvas = np.ones(r.shape, np.complex64)  # the truth on the canvas, free space around it
    rows = np.arange(r.shape[0]) + int(r.origin[1])
    cols = np.arange(r.shape[1]) + int(r.origin[0])
    ok_r = (rows >= 0) & (rows < scan.obj.shape[0])
    ok_c = (cols >= 0) & (cols < scan.obj.shape[1])
    canvas[np.ix_(ok_r, ok_c)] = scan.obj[np.ix_(rows[ok_r], cols[ok_c])]
    r.obj = torch.from_numpy(canvas)
    r._scale_to_data()
    moves = search_offsets(r, 16, reference=False)
    np.testing.assert_allclose(moves, -off, atol=0.5)


def test_position_correction_recovers_errors_of_many_pixels_with_outliers() -> None:
    """Errors of about a scan step (4 px here) with 10 % outliers of 6-10 px, from a flat start: the search
    rounds put most patterns back, the sub-pixel steps finish them."""
    scan = _scan("defocused")
    err = realistic_position_errors(scan.n_points, rms=3.0, outlier_range=(6.0, 10.0), seed=1)
    rms0, med0 = position_errors(scan.positions + err, scan.positions)
    res = refine_scan(_blind(scan, positions=scan.positions + err),
                      RefineConfig(iterations=20, refine_positions=True, refine_probe=False))
    rms, med = position_errors(res.positions, scan.positions)
    # measured: 4.04 / 2.73 -> 2.63 / 0.72 px (the sub-pixel steps alone, position_search_radius=0: 3.94 / 2.40)
    assert rms0 > 3.5 and med < 1.1 and rms < 3.1, (rms0, med0, rms, med)
    hist = res.history
    assert "position_change_rms" in hist[-1] and hist[-1]["position_change_median"] > 1.0
