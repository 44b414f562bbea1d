"""Mixed-state (multi-mode) probes: data of a partially coherent beam (two incoherent modes, each simulated with the
forward model and the counts summed before Poisson noise) are explained by a two-mode refinement and not by one
probe; the modes' algebra (orthogonalisation, the mixed-state misfit) and every refused combination."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import ssim_on_scanned_region
from ptychopinn.cli import main
from ptychopinn.config import RefineConfig
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.io.npz import save_npz
from ptychopinn.physics.noise import GaussianNoise, PoissonNoise
from ptychopinn.refine import refine_scan
from ptychopinn.refine.cg import ConjugateGradient
from ptychopinn.refine.modes import MAX_MODES, initial_modes, orthogonalise
from ptychopinn.simulate import (
    make_object,
    make_probe,
    probe_diameter,
    raster_positions,
    simulate_diffraction,
    step_for_overlap,
)

N = 32
SHARES = (0.75, 0.25)


@functools.cache
def _two_mode_scan() -> ScanData:
    """A scan whose beam is two incoherent modes with power shares :data:`SHARES` (ground truth attached)."""
    p0 = make_probe("focused", N)
    p1 = (np.roll(p0, 1, axis=1) - np.roll(p0, -1, axis=1)).astype(np.complex64)
    obj = make_object("image", 80, amplitude_range=(0.5, 1.0), phase_range=(-1.0, 1.0), image_name="astronaut",
                      phase_image="coins")
    pos = raster_positions(obj.shape, N, step_for_overlap(probe_diameter(p0), 0.7), jitter=0.5, seed=0)
    counts = np.zeros((pos.shape[0], N, N))
    for probe, share in zip((p0, p1), SHARES, strict=True):
        amp, _, _ = simulate_diffraction(obj, probe, pos, nphotons=1e6 * share, poisson=False)
        counts += amp.astype(np.float64) ** 2
    amp = np.sqrt(np.random.default_rng(0).poisson(counts)).astype(np.float32)
    return ScanData(diffraction=amp, positions=pos, probe=p0, obj=obj)


def _blind(scan: ScanData) -> ScanData:
    return ScanData(diffraction=scan.diffraction, positions=scan.positions, probe=scan.probe)


def test_two_modes_explain_partially_coherent_data_that_one_probe_cannot() -> None:
    scan = _two_mode_scan()
    one = refine_scan(_blind(scan), RefineConfig(iterations=40, refine_probe=True, tolerance=None))
    two = refine_scan(_blind(scan), RefineConfig(iterations=40, refine_probe=True, probe_modes=2, tolerance=None))
    assert one.probe_modes is None and two.probe_modes is not None and two.probe_modes.shape == (2, N, N)
    assert two.engine == "rpie" and two.notes["probe"].startswith("refined: 1 probe mode(s) added")
    # measured: misfit 0.0082 (one probe) against 0.0013 (two modes), 40 passes
    assert two.history[-1]["misfit"] < 0.3 * one.history[-1]["misfit"]
    amp1, ph1 = ssim_on_scanned_region(one.obj, one.origin, scan)
    amp2, ph2 = ssim_on_scanned_region(two.obj, two.origin, scan)
    # measured: 0.793 / 0.952 (one probe), 0.927 / 0.994 (two modes)
    assert amp2 >= 0.88 and ph2 >= 0.97 and amp2 > amp1 + 0.08, (amp1, ph1, amp2, ph2)
    power = np.sum(np.abs(two.probe_modes) ** 2, axis=(1, 2))
    # measured: 0.775 / 0.225 (0.752 / 0.248 after 60 passes)
    np.testing.assert_allclose(power / power.sum(), SHARES, atol=0.05)
    np.testing.assert_array_equal(two.probe, two.probe_modes[0])
    inner = np.vdot(two.probe_modes[0], two.probe_modes[1]) / np.sqrt(power[0] * power[1])
    assert abs(inner) < 1e-3  # orthogonal after the last pass


def test_orthogonalise_keeps_the_density_matrix() -> None:
    rng = np.random.default_rng(1)
    modes = torch.from_numpy((rng.standard_normal((3, 8, 8)) + 1j * rng.standard_normal((3, 8, 8))).astype(
        np.complex64))
    out = orthogonalise(modes)
    a, b = modes.reshape(3, -1), out.reshape(3, -1)
    torch.testing.assert_close(a.conj().T @ a, b.conj().T @ b, rtol=1e-4, atol=1e-4)
    gram = b @ b.conj().T
    off = gram - torch.diag(torch.diagonal(gram))
    assert float(off.abs().max()) < 1e-3 * float(gram.abs().max())
    power = torch.diagonal(gram).real
    assert bool(torch.all(power[:-1] >= power[1:]))  # strongest first
    single = modes[0]
    assert orthogonalise(single) is single


def test_initial_modes_keep_the_total_power_and_the_files_modes() -> None:
    scan = _two_mode_scan()
    start = initial_modes(scan, 3)
    assert start.shape == (3, N, N) and start.dtype == np.complex64
    np.testing.assert_allclose(np.sum(np.abs(start) ** 2), np.sum(np.abs(scan.probe) ** 2), rtol=1e-4)
    assert initial_modes(scan, 1) is not None and initial_modes(scan, 1).shape == (N, N)
    given = np.stack([scan.probe, 0.3 * scan.probe.T]).astype(np.complex64)
    with_modes = ScanData(diffraction=scan.diffraction, positions=scan.positions, probe=scan.probe, probe_modes=given)
    two = initial_modes(with_modes, 2)  # the file's own modes, orthogonalised
    np.testing.assert_allclose(np.sum(np.abs(two) ** 2), np.sum(np.abs(given) ** 2), rtol=1e-4)


@pytest.mark.parametrize("noise", [GaussianNoise(), PoissonNoise()], ids=["gaussian", "poisson"])
def test_mixed_state_misfit_is_the_single_mode_one_with_an_empty_second_mode(noise: object) -> None:
    rng = np.random.default_rng(2)
    far = torch.from_numpy((rng.standard_normal((4, 8, 8)) + 1j * rng.standard_normal((4, 8, 8))).astype(np.complex64))
    measured = torch.from_numpy(rng.uniform(0.0, 3.0, (4, 8, 8)).astype(np.float32))
    d1, m1 = noise.direction(far, measured)  # type: ignore[attr-defined]
    mixed = torch.stack([far, torch.zeros_like(far)], dim=1)
    d2, m2 = noise.direction(mixed, measured)  # type: ignore[attr-defined]
    torch.testing.assert_close(d2[:, 0], d1)
    assert float(d2[:, 1].abs().max()) == 0.0
    assert float(m2) == pytest.approx(float(m1), rel=1e-6)
    # two equal halves of the intensity: one gain for both modes
    halves = torch.stack([far, far], dim=1) / np.sqrt(2.0)
    d3, m3 = noise.direction(halves, measured)  # type: ignore[attr-defined]
    assert float(m3) == pytest.approx(float(m1), rel=1e-5)
    torch.testing.assert_close(d3[:, 0], d1 / np.sqrt(2.0), rtol=1e-4, atol=1e-5)


def test_refused_combinations_say_what_to_do() -> None:
    scan = _blind(_two_mode_scan()).subset(np.arange(20))
    with pytest.raises(ConfigError, match="must be refined"):
        refine_scan(scan, RefineConfig(iterations=1, probe_modes=2, refine_probe=False))
    with pytest.raises(ConfigError, match="position refinement models a single probe mode"):
        refine_scan(scan, RefineConfig(iterations=1, probe_modes=2, refine_positions=True))
    with pytest.raises(ConfigError, match=f"at most {MAX_MODES}"):
        refine_scan(scan, RefineConfig(iterations=1, probe_modes=MAX_MODES + 1))
    with pytest.raises(ConfigError, match="single probe mode"):
        ConjugateGradient(scan, RefineConfig(engine="cg", probe_modes=2, refine_probe=False))
    with pytest.raises(ConfigError, match="probe_modes"):
        RefineConfig(probe_modes=0)
    with pytest.raises(DataFormatError, match="probe_modes"):
        ScanData(diffraction=scan.diffraction, positions=scan.positions, probe=scan.probe,
                 probe_modes=scan.probe[None])


def test_cli_probe_modes_writes_every_mode(tmp_path: Path) -> None:
    scan = _blind(_two_mode_scan())
    path = save_npz(tmp_path / "scan.npz", scan)
    out = tmp_path / "out"
    assert main(["refine", str(path), "--flat", "--probe-modes", "2", "--iterations", "3", "--product",
                 "--output-dir", str(out), "--quiet"]) == 0
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["probe_modes"].shape == (2, N, N)
        np.testing.assert_array_equal(z["probe"], z["probe_modes"][0])
    assert (out / "probe.png").exists()
    import h5py

    with h5py.File(out / "reconstruction.h5") as f:
        assert f["probe"].shape == (2, N, N)
    with pytest.raises(SystemExit) as exc:
        main(["refine", str(path), "--flat", "--probe-modes", "0", "--output-dir", str(tmp_path / "bad")])
    assert exc.value.code == 2 and not (tmp_path / "bad").exists()
