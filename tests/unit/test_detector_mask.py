"""Masked detector pixels are left out, not believed: they travel through every format, are stored as 0,
and neither the training loss, the input normalisation nor refinement depends on what they hold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import astronaut_scan, ssim_on_scanned_region
from ptychopinn.config import RefineConfig
from ptychopinn.data.grouping import group_positions
from ptychopinn.data.normalize import input_scale
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import DataFormatError
from ptychopinn.physics.losses import amplitude_mae, poisson_loss
from ptychopinn.refine import refine_scan
from ptychopinn.training.data import GroupedDataset

N = 32


def _bad_pixels(n: int = N, fraction: float = 0.06, seed: int = 3) -> np.ndarray:
    """``[n, n]`` bool, True = bad: random pixels plus one detector-gap column (never the zero order)."""
    rng = np.random.default_rng(seed)
    bad = rng.random((n, n)) < fraction
    bad[:, n // 2 + 5] = True
    bad[n // 2, n // 2] = False
    return bad


def _corrupted(scan: ScanData, bad: np.ndarray, with_mask: bool) -> ScanData:
    """The scan with hot pixels (50x the brightest value) where ``bad``; masked or not."""
    diff = np.array(scan.diffraction, copy=True)
    diff[:, bad] = 50.0 * float(diff.max())
    if with_mask:
        diff[:, bad] = 0.0  # what the readers store for masked pixels
    return dataclasses.replace(scan, diffraction=diff, obj=None, patches=None,
                               valid_pixels=~bad if with_mask else None)


def test_scan_validates_the_mask() -> None:
    scan = astronaut_scan()
    with pytest.raises(DataFormatError, match=r"valid_pixels.*\(32, 32\) boolean detector mask"):
        dataclasses.replace(scan, valid_pixels=np.ones((N, N + 2), bool))
    with pytest.raises(DataFormatError, match="every pixel masked"):
        dataclasses.replace(scan, valid_pixels=np.zeros((N, N), bool))
    ok = dataclasses.replace(scan, valid_pixels=np.ones((N, N), np.uint8))
    assert ok.valid_pixels.dtype == bool and ok.pixel_weights().dtype == np.float32
    np.testing.assert_array_equal(ok.subset(np.arange(3)).valid_pixels, ok.valid_pixels)


@pytest.mark.parametrize("fmt", ["npz", "h5", "cxi"])
def test_mask_round_trips_and_masked_pixels_are_stored_as_zero(tmp_path: Path, fmt: str) -> None:
    from ptychopinn.io.cxi import save_cxi
    from ptychopinn.io.hdf5 import save_h5_scan
    from ptychopinn.io.npz import save_npz
    from ptychopinn.io.registry import load_scan

    bad = _bad_pixels()
    hot = np.array(astronaut_scan().diffraction, copy=True)
    hot[:, bad] = 1e4  # junk a detector leaves in its bad pixels
    scan = dataclasses.replace(astronaut_scan(), diffraction=hot, obj=None, patches=None, valid_pixels=~bad,
                               pixel_size_m=1e-8, energy_ev=8000.0, distance_m=2.0)
    path = tmp_path / f"scan.{fmt}"
    {"npz": save_npz, "h5": save_h5_scan, "cxi": save_cxi}[fmt](path, scan)
    back = load_scan(path, units="auto")  # the junk in masked pixels must not sway the units rule either
    np.testing.assert_array_equal(back.valid_pixels, ~bad)
    assert float(np.abs(back.diffraction[:, bad]).max()) == 0.0
    np.testing.assert_allclose(back.diffraction[:, ~bad], scan.diffraction[:, ~bad], rtol=1e-5)


def test_losses_ignore_masked_pixels() -> None:
    rng = np.random.default_rng(0)
    pred = torch.from_numpy(rng.uniform(0.1, 2.0, (4, 1, N, N)).astype(np.float32))
    meas = torch.from_numpy(rng.uniform(0.1, 2.0, (4, 1, N, N)).astype(np.float32))
    bad = torch.from_numpy(_bad_pixels())
    w = (~bad).float()
    junk = meas.clone()
    junk[..., bad] = 1e3
    for loss in (lambda m: poisson_loss(pred, m, 30.0, w), lambda m: amplitude_mae(pred, m, w)):
        torch.testing.assert_close(loss(meas), loss(junk))
    # with every pixel measured the weighted loss is the plain one
    ones = torch.ones(N, N)
    torch.testing.assert_close(poisson_loss(pred, meas, 30.0, ones), poisson_loss(pred, meas, 30.0))
    torch.testing.assert_close(amplitude_mae(pred, meas, ones), amplitude_mae(pred, meas))


def test_training_batches_zero_masked_pixels_and_carry_the_weights() -> None:
    bad = _bad_pixels()
    scan = _corrupted(astronaut_scan(), bad, with_mask=True)
    w = scan.pixel_weights()
    a = input_scale(scan.diffraction, weights=w)
    hot = _corrupted(astronaut_scan(), bad, with_mask=False)
    # the normalisation counts measured pixels only: junk in masked pixels does not move it
    assert a == pytest.approx(input_scale(hot.diffraction, weights=w))
    ds = GroupedDataset(hot.diffraction, group_positions(hot.positions, 1), a, weights=w)
    batch = ds.__getitems__([0, 1, 2])
    assert float(batch["x"][:, :, torch.from_numpy(bad)].abs().max()) == 0.0
    assert torch.equal(batch["weights"], torch.from_numpy(w))
    assert set(ds[0]) == {"x", "offsets", "weights"} and ds[0]["weights"].shape == (N, N)


def test_refinement_with_the_mask_matches_clean_data_and_beats_believing_the_junk() -> None:
    clean, bad = astronaut_scan(), _bad_pixels()
    cfg = RefineConfig(iterations=25, seed=0)
    scores = {}
    for name, scan in (("clean", dataclasses.replace(clean, obj=None, patches=None)),
                       ("masked", _corrupted(clean, bad, with_mask=True)),
                       ("unmasked", _corrupted(clean, bad, with_mask=False))):
        r = refine_scan(scan, cfg)
        scores[name] = ssim_on_scanned_region(r.obj, r.origin, clean)
    # measured: clean 0.91 / 0.98, masked 0.90 / 0.98, unmasked 0.26 / 0.37 (6 % hot pixels + a gap column)
    assert scores["masked"][0] > scores["clean"][0] - 0.05
    assert scores["masked"][1] > scores["clean"][1] - 0.05
    assert scores["masked"][0] > scores["unmasked"][0] + 0.2
    assert scores["masked"][1] > scores["unmasked"][1] + 0.2
