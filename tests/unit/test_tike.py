"""The tike reader: files written by the test in tike's layout (tike's forward model, its unshifted far field and
top-left scan corners) read into the core's conventions exactly; bzip2 and plain NPZ alike; probe modes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tike_forward, write_tike
from ptychopinn.cli import main
from ptychopinn.io.registry import describe_file, detect_format, load_probe, load_scan
from ptychopinn.io.tike import load_probe_modes
from ptychopinn.physics.fft import fft2c
from ptychopinn.physics.shift import extract_exact

N = 16


def _probe(n: int = N, seed: int = 0) -> np.ndarray:
    """A smooth, asymmetric complex probe (a flip or a transpose would show)."""
    yy, xx = np.mgrid[:n, :n] - n // 2
    phase = 0.3 * xx - 0.1 * yy + 0.02 * xx * yy
    return (np.exp(-((xx - 1.0) ** 2 + (yy + 0.5) ** 2 / 1.7) / 10.0) * np.exp(1j * phase)).astype(np.complex64)


def _tike_scan(seed: int = 3, m: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(object [60, 70] complex, corners [m, 2] (row, col) integers, not starting at 0, probe [N, N])."""
    rng = np.random.default_rng(seed)
    obj = (rng.uniform(0.6, 1.0, (60, 70)) * np.exp(1j * rng.uniform(-1, 1, (60, 70)))).astype(np.complex64)
    corners = np.stack([rng.integers(3, 60 - N, m), rng.integers(7, 70 - N, m)], axis=1).astype(np.float32)
    return obj, corners, _probe()


def test_reader_matches_tikes_own_model_exactly(tmp_path: Path) -> None:
    """Counts from tike's model (unshifted FFT, top-left corners in (row, col)) read as amplitudes that the core's
    model (centred FFT, probe pixel N//2 on the position (x, y)) reproduces to float precision."""
    obj, corners, probe = _tike_scan()
    counts = tike_forward(obj, corners, probe) * 1e4
    path = write_tike(tmp_path / "star.npz.bz2", data=counts[None], scan=corners[None],
                      probe=(probe * 100)[None, None, None, None])
    scan = load_scan(path)
    origin = np.asarray(scan.metadata["position_origin_px"])  # tike's (x, y) of our object pixel (0, 0)
    np.testing.assert_array_equal(origin, corners.min(axis=0)[::-1])
    np.testing.assert_allclose(scan.positions, corners[:, ::-1] - origin + N // 2)
    ours = obj[int(origin[1]):, int(origin[0]):]
    patches = extract_exact(torch.from_numpy(ours), scan.positions, N)
    model = (fft2c(torch.from_numpy(scan.probe) * patches)).abs().numpy()
    assert scan.metadata["input_units"] == "intensity"
    np.testing.assert_allclose(scan.diffraction, model, rtol=1e-4, atol=1e-4 * float(model.max()))
    # the conventions matter: the unshifted frame, or the corner instead of the centre, do not fit
    assert not np.allclose(np.fft.ifftshift(scan.diffraction, axes=(-2, -1)), model, atol=0.05 * float(model.max()))
    off = extract_exact(torch.from_numpy(ours), scan.positions + 1, N)  # a window one pixel off
    wrong = (fft2c(torch.from_numpy(scan.probe) * off)).abs().numpy()
    assert not np.allclose(scan.diffraction, wrong, atol=0.05 * float(model.max()))


def test_plain_and_bzip2_files_read_the_same_and_are_recognised_by_content(tmp_path: Path) -> None:
    obj, corners, probe = _tike_scan(m=12)
    arrays = {"data": tike_forward(obj, corners, probe)[None] * 100, "scan": corners[None],
              "probe": probe[None, None, None, None]}
    plain = write_tike(tmp_path / "plain.dat", compress=False, **arrays)
    packed = write_tike(tmp_path / "packed.h5", **arrays)  # misleading names: the content decides
    assert detect_format(plain).name == detect_format(packed).name == "tike"
    a, b = load_scan(plain), load_scan(packed)
    np.testing.assert_array_equal(a.diffraction, b.diffraction)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(load_probe(packed), probe)
    kind, info, valid = describe_file(packed)
    assert (kind, info["format"], valid, info["n_points"], info["N"]) == ("scan", "tike", True, 12, N)


def test_probe_modes_are_read_for_mixed_state_refinement(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    obj, corners, probe = _tike_scan(m=10)
    modes = np.stack([probe, 0.5 * probe.T, 0.25 * probe[::-1]])
    path = write_tike(tmp_path / "modes.npz.bz2", data=tike_forward(obj, corners, probe)[None] * 100,
                      scan=corners[None], probe=modes[None, None, None])
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        scan = load_scan(path)
    np.testing.assert_array_equal(scan.probe, probe)
    np.testing.assert_array_equal(scan.probe_modes, modes)
    assert scan.metadata["probe_modes"] == 3
    np.testing.assert_allclose(sum(scan.metadata["probe_mode_power"]), 1.0, atol=1e-3)
    assert scan.metadata["probe_mode_power"][0] > scan.metadata["probe_mode_power"][1]
    lines = [r.getMessage() for r in caplog.records if "incoherent modes" in r.getMessage()]
    assert len(lines) == 1 and "refinement uses them all" in lines[0]
    np.testing.assert_array_equal(load_probe_modes(path), modes)
    # a probe given instead of the file's: no modes of the file
    assert load_scan(path, probe=probe).probe_modes is None
    # cropped frames: every mode resampled like the probe
    cropped = load_scan(path, crop=12)
    assert cropped.probe_modes is not None and cropped.probe_modes.shape == (3, 12, 12)
    np.testing.assert_array_equal(cropped.probe_modes[0], cropped.probe)


def test_refine_and_info_read_a_tike_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    obj, corners, probe = _tike_scan(m=20)
    path = write_tike(tmp_path / "scan.npz.bz2", data=tike_forward(obj, corners, probe)[None] * 1e4,
                      scan=corners[None], probe=probe[None, None, None, None])
    assert main(["info", str(path)]) == 0
    assert "format: tike" in capsys.readouterr().out
    out = tmp_path / "refined"
    assert main(["refine", str(path), "--flat", "--iterations", "2", "--output-dir", str(out), "--quiet"]) == 0
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["probe"].shape == (N, N)
    assert "diffraction units intensity, as the file states" in (out / "run.log").read_text()
