"""Simulator: objects, probes, scan patterns, Poisson statistics and consistency with the forward model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from ptychopinn.config import SimulationConfig
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.physics.fft import far_field_amplitude
from ptychopinn.physics.forward import ForwardModel
from ptychopinn.physics.patches import extract_patches
from ptychopinn.physics.shift import extract_exact
from ptychopinn.simulate import (
    AVAILABLE_IMAGES,
    make_object,
    make_probe,
    probe_diameter,
    raster_positions,
    simulate_diffraction,
    simulate_scan,
    spiral_positions,
    step_for_overlap,
)
from ptychopinn.simulate.objects import next_image, phase_partner
from ptychopinn.simulate.simulator import _FineGrid

N = 32


def _expected_amplitude(obj: np.ndarray, probe: np.ndarray, pos: np.ndarray, probe_scale: float = 4.0):
    """The training forward model, written out independently of the simulator's batching."""
    model = ForwardModel(torch.from_numpy(probe), probe_scale=probe_scale)
    patches = extract_exact(torch.from_numpy(obj), pos, probe.shape[0])
    with torch.no_grad():
        return model(patches[:, None])[:, 0].numpy(), patches.numpy()


@pytest.fixture(scope="module")
def obj() -> np.ndarray:
    return make_object("grf", 96, amplitude_range=(0.4, 1.0), phase_range=(-1.5, 1.5), seed=3)


@pytest.fixture(scope="module")
def probe() -> np.ndarray:
    return make_probe("focused", N)


# ------------------------------------------------------------------------------------------ physics
def test_oversampled_data_conserve_energy_and_differ_mostly_at_high_angles(obj, probe):
    pos = np.random.default_rng(2).uniform(N // 2 + 1, 96 - 2 - N // 2, size=(20, 2))
    one, _, _ = simulate_diffraction(obj, probe, pos, nphotons=1e6, poisson=False, oversample=1)
    two, patches2, _ = simulate_diffraction(obj, probe, pos, nphotons=1e6, poisson=False, oversample=2)
    _, patches1, _ = simulate_diffraction(obj, probe, pos, nphotons=1e6, poisson=False)
    np.testing.assert_array_equal(patches1, patches2)  # the truth stays on the reconstruction grid
    for a in (one, two):  # the dose scale fixes the mean total count at nphotons
        assert np.mean(np.sum(a.astype(np.float64) ** 2, axis=(1, 2))) == pytest.approx(1e6, rel=1e-5)
    fine = _FineGrid(obj, probe, 2, 4.0)
    waves_energy = float(fine.probe.abs().square().sum())
    full = far_field_amplitude(fine.probe[None] * fine.obj[:2 * N, :2 * N][None])
    assert float(full.square().sum()) == pytest.approx(
        float((fine.probe * fine.obj[:2 * N, :2 * N]).abs().square().sum()), rel=1e-5)  # Parseval
    assert waves_energy > 0
    k = np.hypot(*np.meshgrid(np.arange(N) - N // 2, np.arange(N) - N // 2))
    rel = np.abs(two - one) / np.maximum(one, 1e-3 * one.max())
    centre, edge = float(np.median(rel[:, k < N / 8])), float(np.median(rel[:, k > 3 * N / 8]))
    assert edge > 2 * centre and centre < 0.05, (centre, edge)
    assert not np.allclose(one, two, rtol=1e-2)


def test_oversample_is_validated(obj, probe):
    with pytest.raises(ConfigError, match="oversample"):
        simulate_diffraction(obj, probe, np.array([[48.0, 48.0]]), nphotons=1e4, oversample=0)
    with pytest.raises(ConfigError, match="oversample"):
        SimulationConfig(oversample=9)


def test_noiseless_simulation_equals_training_forward_model_at_subpixel_positions(obj, probe):
    rng = np.random.default_rng(0)
    pos = rng.uniform(N // 2, 96 - 1 - N // 2, size=(37, 2))
    assert np.any(np.abs(pos - np.round(pos)) > 0.1)  # genuinely non-integer positions
    amp, patches, c = simulate_diffraction(obj, probe, pos, nphotons=1e5, poisson=False, batch_size=8)
    expected, expected_patches = _expected_amplitude(obj, probe, pos)
    assert amp.dtype == np.float32 and amp.shape == (37, N, N)
    assert patches.dtype == np.complex64
    np.testing.assert_allclose(patches, expected_patches, rtol=0, atol=1e-6)
    np.testing.assert_allclose(amp, c * expected, rtol=1e-5, atol=1e-5 * float(c * expected.max()))
    # the dose scale makes the mean total count exactly nphotons
    assert np.mean(np.sum(amp.astype(np.float64) ** 2, axis=(1, 2))) == pytest.approx(1e5, rel=1e-5)


def test_probe_scale_is_passed_to_the_forward_model(obj, probe):
    pos = np.array([[40.3, 50.7], [60.0, 33.2]])
    amp, _, c = simulate_diffraction(obj, probe, pos, nphotons=1e4, poisson=False, probe_scale=2.0)
    expected, _ = _expected_amplitude(obj, probe, pos, probe_scale=2.0)
    np.testing.assert_allclose(amp, c * expected, rtol=1e-5, atol=1e-4)


def test_scan_data_reproduces_from_its_own_fields_and_metadata():
    cfg = SimulationConfig(N=N, object_size=96, object_kind="lines", poisson=False, nphotons=1e6, seed=5)
    scan = simulate_scan(cfg)
    model = ForwardModel(torch.from_numpy(scan.probe), probe_scale=scan.metadata["probe_scale"])
    patches = extract_exact(torch.from_numpy(scan.obj), scan.positions, N)
    with torch.no_grad():
        expected = scan.metadata["dose_scale"] * model(patches[:, None])[:, 0].numpy()
    np.testing.assert_allclose(scan.diffraction, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(scan.patches, patches.numpy(), atol=1e-6)


def test_flat_rate_poisson_mean_and_variance():
    # a single-pixel probe on a uniform object gives a perfectly flat far field: every pixel has the
    # same expected count, so the counts over all pixels are i.i.d. Poisson(rate)
    obj = np.ones((48, 48), np.complex64)
    probe = np.zeros((N, N), np.complex64)
    probe[N // 2, N // 2] = 1.0
    pos = raster_positions(obj.shape, N, 2.0)
    for rate in (3.0, 2500.0):
        amp, _, _ = simulate_diffraction(obj, probe, pos, nphotons=rate * N * N, seed=11)
        counts = amp.astype(np.float64) ** 2
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-3 * max(1.0, rate))  # whole photons
        n = counts.size
        se_mean = np.sqrt(rate / n)
        se_var = np.sqrt((rate + 2 * rate**2) / n)
        assert abs(counts.mean() - rate) < 5 * se_mean
        assert abs(counts.var() - rate) < 5 * se_var
        assert counts.var() > 0.5 * rate  # noise really is there


def test_poisson_residuals_are_standard_and_total_dose_matches(obj, probe):
    pos = raster_positions(obj.shape, N, 3.0, jitter=0.5, seed=1)
    clean, _, c0 = simulate_diffraction(obj, probe, pos, nphotons=1e6, poisson=False)
    noisy, _, c1 = simulate_diffraction(obj, probe, pos, nphotons=1e6, poisson=True, seed=4)
    assert c0 == c1
    rate = clean.astype(np.float64) ** 2
    counts = noisy.astype(np.float64) ** 2
    sel = rate > 50
    z = (counts[sel] - rate[sel]) / np.sqrt(rate[sel])
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert z.var() == pytest.approx(1.0, abs=0.05)
    totals = counts.sum(axis=(1, 2))
    assert totals.mean() == pytest.approx(1e6, rel=1e-3)


def test_noise_reproducible_from_seed_and_independent_of_batch_size(obj, probe):
    pos = raster_positions(obj.shape, N, 4.0)
    a, _, _ = simulate_diffraction(obj, probe, pos, nphotons=1e4, seed=7, batch_size=1024)
    b, _, _ = simulate_diffraction(obj, probe, pos, nphotons=1e4, seed=7, batch_size=5)
    c, _, _ = simulate_diffraction(obj, probe, pos, nphotons=1e4, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_simulate_scan_reproducible_and_seed_sensitive():
    cfg = SimulationConfig(N=N, object_size=96, object_kind="grf", nphotons=1e5, seed=2)
    s1, s2 = simulate_scan(cfg), simulate_scan(cfg)
    s3 = simulate_scan(cfg.replace(seed=3))
    for name in ("diffraction", "positions", "obj", "patches"):
        np.testing.assert_array_equal(getattr(s1, name), getattr(s2, name))
    assert not np.array_equal(s1.obj, s3.obj)
    assert not np.array_equal(s1.positions, s3.positions)  # jitter follows the seed


def test_simulate_scan_fields_and_metadata():
    cfg = SimulationConfig(N=N, object_size=100, object_kind="image", image_name="coins", scan="spiral",
                           n_points=40, nphotons=2e5, seed=1)
    scan = simulate_scan(cfg)
    assert isinstance(scan, ScanData)
    assert scan.n_points == 40 and scan.N == N
    assert scan.obj.shape == (100, 100)
    np.testing.assert_array_equal(scan.positions_start, scan.positions)
    np.testing.assert_array_equal(scan.scan_index, np.zeros(40, np.int64))
    md = scan.metadata
    assert md["simulated"] is True and md["poisson"] is True and md["seed"] == 1
    assert md["nphotons"] == 2e5 and md["probe_scale"] == 4.0 and md["dose_scale"] > 0
    assert md["config"] == cfg.to_dict()
    assert md["scan_step_px"] == pytest.approx(0.3 * md["probe_diameter_px"])


def test_object_override_is_used():
    override = make_object("lines", 80, amplitude_range=(0.2, 0.9), phase_range=(0.0, 0.5), seed=9)
    cfg = SimulationConfig(N=N, object_size=96, nphotons=1e4)
    scan = simulate_scan(cfg, object_override=override)
    np.testing.assert_array_equal(scan.obj, override)
    with pytest.raises(ConfigError):
        simulate_scan(cfg, object_override=np.ones((20, 20), np.complex64))


def test_simulator_input_errors(obj, probe):
    pos = np.array([[40.0, 40.0]])
    with pytest.raises(ConfigError, match="nphotons"):
        simulate_diffraction(obj, probe, pos, nphotons=0.0)
    with pytest.raises(DataFormatError, match="positions"):
        simulate_diffraction(obj, probe, np.zeros((3, 3)), nphotons=1e3)
    with pytest.raises(DataFormatError, match="probe"):
        simulate_diffraction(obj, probe[:, :-2], pos, nphotons=1e3)
    with pytest.raises(DataFormatError, match="obj"):
        simulate_diffraction(np.zeros_like(obj), probe, pos, nphotons=1e3)


def test_importing_simulate_does_not_import_torch():
    code = ("import sys, ptychopinn.simulate as s; assert 'torch' not in sys.modules; "
            "s.make_probe('gaussian', 8)")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------ objects
@pytest.mark.parametrize("kind", ["lines", "grf", "image"])
def test_object_ranges_shape_dtype(kind):
    o = make_object(kind, 96, amplitude_range=(0.3, 0.8), phase_range=(-2.0, 1.0), seed=4)
    assert o.shape == (96, 96) and o.dtype == np.complex64
    amp, ph = np.abs(o), np.angle(o)
    assert amp.min() == pytest.approx(0.3, abs=1e-5) and amp.max() == pytest.approx(0.8, abs=1e-5)
    assert ph.min() == pytest.approx(-2.0, abs=1e-5) and ph.max() == pytest.approx(1.0, abs=1e-5)
    # amplitude and phase come from different fields
    corr = np.corrcoef(amp.ravel(), ph.ravel())[0, 1]
    assert abs(corr) < 0.8


@pytest.mark.parametrize("kind", ["lines", "grf"])
def test_random_objects_are_seeded(kind):
    kw = dict(amplitude_range=(0.5, 1.0), phase_range=(-1.0, 1.0))
    a = make_object(kind, 64, seed=1, **kw)
    np.testing.assert_array_equal(a, make_object(kind, 64, seed=1, **kw))
    assert not np.array_equal(a, make_object(kind, 64, seed=2, **kw))


def test_every_listed_image_loads_offline_and_partners_differ():
    kw = dict(amplitude_range=(0.5, 1.0), phase_range=(-1.0, 1.0))
    seen = []
    for name in AVAILABLE_IMAGES:
        o = make_object("image", 40, image_name=name, **kw)
        assert np.all(np.isfinite(o)) and np.ptp(np.abs(o)) > 0.4
        assert phase_partner(name) != name and next_image(name) != name
        assert phase_partner(next_image(name)) != phase_partner(name)
        seen.append(o)
    # different names give different objects
    assert not np.array_equal(seen[0], seen[1])


def test_unknown_kind_and_image_raise_config_error_listing_choices():
    kw = dict(amplitude_range=(0.5, 1.0), phase_range=(0.0, 1.0))
    with pytest.raises(ConfigError, match="lines") as exc:
        make_object("blobs", 32, **kw)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="camera"):
        make_object("image", 32, image_name="no_such_image", **kw)
    with pytest.raises(ConfigError, match="amplitude_range"):
        make_object("grf", 32, amplitude_range=(1.0, 0.5), phase_range=(0.0, 1.0))
    with pytest.raises(ConfigError, match="focused"):
        make_probe("zernike", 32)


# ------------------------------------------------------------------------------------------- probes
@pytest.mark.parametrize("kind", ["focused", "gaussian"])
@pytest.mark.parametrize("n", [32, 64])
def test_probe_centred_and_symmetric(kind, n):
    p = make_probe(kind, n)
    assert p.shape == (n, n) and p.dtype == np.complex64
    assert np.abs(p).max() == pytest.approx(1.0)
    intensity = np.abs(p.astype(np.complex128)) ** 2
    rows, cols = np.indices(p.shape)
    cy, cx = (intensity * rows).sum() / intensity.sum(), (intensity * cols).sum() / intensity.sum()
    assert abs(cy - n // 2) <= 0.5 and abs(cx - n // 2) <= 0.5
    assert np.unravel_index(np.argmax(intensity), p.shape) == (n // 2, n // 2)
    # point symmetry about (n//2, n//2): P(n//2 + d) == P(n//2 - d)
    inner = p[1:, 1:]
    np.testing.assert_allclose(inner, inner[::-1, ::-1], atol=1e-5)


def test_focused_probe_spot_size_and_side_lobes():
    n, d = 64, 16.0
    in_focus = make_probe("focused", n, diameter=d, defocus=0.0)
    profile = np.abs(in_focus[n // 2, n // 2:n // 2 + 12])
    assert abs(int(np.argmin(profile)) - d / 2) <= 1  # first Airy zero at radius d/2
    assert profile.min() < 0.05
    default = make_probe("focused", n, diameter=d)
    intensity = np.abs(default) ** 2
    r = np.hypot(*(np.indices((n, n)) - n // 2))
    outside = intensity[r > d / 2].sum() / intensity.sum()
    assert 0.05 < outside < 0.4  # visible side lobes, but most energy in the main lobe
    assert np.ptp(np.angle(default[r < d])) > 0.3  # the defocus gives the probe a phase structure
    # a larger diameter gives a larger spot
    assert probe_diameter(make_probe("focused", n, diameter=24.0)) > probe_diameter(default)


def test_gaussian_probe_fwhm_and_diameter():
    n, fwhm = 64, 12.0
    p = np.abs(make_probe("gaussian", n, diameter=fwhm))
    assert p[n // 2, n // 2 + 6] == pytest.approx(0.5, abs=1e-6)
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    # |P|^2 = exp(-r^2/sigma^2): 90 % of the energy inside r = sigma * sqrt(ln 10)
    assert probe_diameter(p) == pytest.approx(2 * sigma * np.sqrt(np.log(10)), abs=1.0)


def test_probe_errors():
    with pytest.raises(ConfigError, match="diameter"):
        make_probe("focused", 32, diameter=0.5)
    with pytest.raises(ConfigError, match="diameter"):
        make_probe("gaussian", 32, diameter=40.0)
    with pytest.raises(ConfigError, match="even"):
        make_probe("gaussian", 33)
    with pytest.raises(DataFormatError):
        probe_diameter(np.zeros((8, 8)))


# --------------------------------------------------------------------------------------------- scans
def _assert_patches_inside(pos: np.ndarray, shape: tuple[int, int], n: int) -> None:
    h, w = shape
    assert np.all(pos[:, 0] - n // 2 >= 0) and np.all(pos[:, 0] + n // 2 <= w - 1)
    assert np.all(pos[:, 1] - n // 2 >= 0) and np.all(pos[:, 1] + n // 2 <= h - 1)
    # behaviourally: patches of an all-ones object never read the zero padding outside it
    ones = torch.ones(shape, dtype=torch.complex64)
    patches = extract_patches(ones, torch.from_numpy(pos), n)
    np.testing.assert_allclose(patches.abs().numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("shape", [(96, 96), (100, 128)])
def test_raster_positions_inside_and_spaced(shape):
    pos = raster_positions(shape, N, 5.0)
    assert pos.dtype == np.float64 and pos.shape[1] == 2
    _assert_patches_inside(pos, shape, N)
    xs, ys = np.unique(pos[:, 0]), np.unique(pos[:, 1])
    np.testing.assert_allclose(np.diff(xs), 5.0)
    np.testing.assert_allclose(np.diff(ys), 5.0)
    assert len(pos) == len(xs) * len(ys)
    # the grid is centred: equal margins on both sides
    assert xs[0] - N // 2 == pytest.approx(shape[1] - 1 - N // 2 - xs[-1])
    jittered = raster_positions(shape, N, 5.0, jitter=3.0, seed=1)
    _assert_patches_inside(jittered, shape, N)
    moved = np.abs(jittered - pos)
    assert moved.max() <= 3.0 + 1e-9 and moved.mean() > 0.5
    np.testing.assert_array_equal(jittered, raster_positions(shape, N, 5.0, jitter=3.0, seed=1))


def test_raster_subset_and_too_many_points():
    full = raster_positions((96, 96), N, 4.0)
    sub = raster_positions((96, 96), N, 4.0, n_points=20, seed=3)
    assert sub.shape == (20, 2)
    assert {tuple(p) for p in sub} <= {tuple(p) for p in full}
    assert not np.array_equal(sub, raster_positions((96, 96), N, 4.0, n_points=20, seed=4))
    with pytest.raises(ConfigError, match="n_points"):
        raster_positions((96, 96), N, 4.0, n_points=len(full) + 1)
    with pytest.raises(ConfigError, match="object"):
        raster_positions((30, 96), N, 4.0)
    with pytest.raises(ConfigError, match="step"):
        raster_positions((96, 96), N, 0.0)


@pytest.mark.parametrize("step", [3.0, 6.0])
def test_spiral_spacing_and_bounds(step):
    shape = (128, 112)
    pos = spiral_positions(shape, N, step, seed=2)
    _assert_patches_inside(pos, shape, N)
    dist, _ = cKDTree(pos).query(pos, k=2)
    assert dist[:, 1].mean() == pytest.approx(step, rel=0.1)
    # centred on the valid area, and it fills it
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
    np.testing.assert_allclose(pos[0], centre, atol=step)
    assert pos[:, 0].max() - pos[:, 0].min() > shape[1] - N - 2 * step
    first = spiral_positions(shape, N, step, n_points=10, seed=2)
    np.testing.assert_array_equal(first, pos[:10])
    with pytest.raises(ConfigError, match="n_points"):
        spiral_positions(shape, N, step, n_points=len(pos) + 1, seed=2)


def test_step_for_overlap():
    assert step_for_overlap(20.0, 0.7) == pytest.approx(6.0)
    assert step_for_overlap(10.0, 0.0) == pytest.approx(10.0)
    with pytest.raises(ConfigError, match="overlap"):
        step_for_overlap(10.0, 1.0)
    with pytest.raises(ConfigError, match="diameter"):
        step_for_overlap(0.0, 0.5)
