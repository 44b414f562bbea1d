"""Tests for ptychopinn.plots: every figure is written atomically and reads back as a real image."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from ptychopinn import metrics as M
from ptychopinn import plots as P
from ptychopinn.errors import DataFormatError

H = 48


@pytest.fixture
def obj() -> np.ndarray:
    """[48, 48] complex128 with a textured amplitude and a phase ramp that wraps."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:H, 0:H]
    return (0.5 + rng.random((H, H))) * np.exp(1j * (0.3 * x - 0.1 * y))


def _check_png(path: Path, min_h: int, min_w: int) -> np.ndarray:
    """Read back ``path``; asserts a sizeable, non-constant RGB(A) image and no temp leftovers."""
    assert path.is_file()
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= min_h and img.shape[1] >= min_w
    assert float(img[..., :3].std()) > 0.01
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    return img


def test_object_figure_and_single_panels(tmp_path: Path, obj: np.ndarray) -> None:
    out = P.save_object_figure(obj, tmp_path / "object.png", title="test object", dpi=60)
    assert out == tmp_path / "object.png"
    img = _check_png(out, 200, 500)
    assert img.shape[1] > img.shape[0]  # two panels side by side
    _check_png(P.save_amplitude_png(obj, tmp_path / "amp.png", dpi=60), 200, 250)
    _check_png(P.save_phase_png(obj, tmp_path / "sub" / "phase.png", dpi=60), 200, 250)  # creates folder


def test_small_phase_range_and_constant_images_render(tmp_path: Path) -> None:
    small = np.exp(1j * 0.01 * np.arange(H * H).reshape(H, H) / (H * H))
    _check_png(P.save_phase_png(small, tmp_path / "small.png", dpi=50), 150, 200)
    # A constant image has no contrast; the colour bar and titles still differ from the background.
    _check_png(P.save_object_figure(np.ones((H, H), complex), tmp_path / "flat.png", dpi=50), 150, 300)


def test_comparison_figure_uses_aligned_crops(tmp_path: Path, obj: np.ndarray) -> None:
    recon = obj * np.exp(0.5j) * 1.7
    res = M.evaluate(recon, obj)
    rc, tc, _ = M.align_for_comparison(recon, obj)
    out = P.save_comparison_figure(rc, tc, tmp_path / "cmp.png", metrics=res, title="run 1", dpi=50)
    img = _check_png(out, 300, 500)
    assert img.shape[1] > img.shape[0]
    with pytest.raises(DataFormatError, match="shape"):
        P.save_comparison_figure(rc, tc[1:], tmp_path / "bad.png")
    with pytest.raises(DataFormatError, match="evaluate"):
        P.save_comparison_figure(rc, tc, tmp_path / "bad.png", metrics={"amplitude": {}})


def test_frc_figure(tmp_path: Path, obj: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    noisy = obj + 0.2 * (rng.standard_normal((H, H)) + 1j * rng.standard_normal((H, H)))
    res = M.evaluate(noisy, obj)
    _check_png(P.save_frc_figure(res, tmp_path / "frc.png", dpi=60), 200, 300)
    with pytest.raises(DataFormatError, match="frc"):
        P.save_frc_figure({"amplitude": {}}, tmp_path / "bad.png")


def test_loss_curves_with_nan_none_and_nonpositive_values(tmp_path: Path) -> None:
    history = {
        "train_loss": [1.0, 0.5, math.nan, 0.2, 0.1],
        "val_loss": [1.2, None, 0.6, math.inf, 0.3],  # type: ignore[list-item]
        "all_nan": [math.nan, math.nan],
    }
    _check_png(P.save_loss_curves(history, tmp_path / "loss.png", dpi=60), 200, 300)
    # Negative values (e.g. a Poisson NLL without its constant) switch the y axis to linear.
    _check_png(P.save_loss_curves({"nll": [-3.0, -4.0, -4.5]}, tmp_path / "nll.png", dpi=60), 200, 300)
    with pytest.raises(DataFormatError, match="history"):
        P.save_loss_curves({}, tmp_path / "empty.png")
    with pytest.raises(DataFormatError, match="flat sequence"):
        P.save_loss_curves({"x": [[1.0, 2.0]]}, tmp_path / "nested.png")


def test_scan_preview(tmp_path: Path, obj: np.ndarray) -> None:
    n = 16
    yy, xx = np.mgrid[0:n, 0:n] - n / 2
    probe = np.exp(-(xx**2 + yy**2) / 20.0) * np.exp(1j * 0.05 * (xx**2 + yy**2))
    grid = np.arange(10, 40, 6, dtype=float)
    positions = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)  # (x, y)
    patterns = np.abs(np.fft.fftshift(np.fft.fft2(probe[None] * np.ones((positions.shape[0], 1, 1)))))
    patterns[:, 0, 0] = 0.0  # zeros must not break the log scale
    out = P.save_scan_preview(obj, probe, positions, patterns, tmp_path / "preview.png", title="scan", dpi=50)
    _check_png(out, 300, 500)
    with pytest.raises(DataFormatError, match="positions"):
        P.save_scan_preview(obj, probe, positions[:, :1], patterns, tmp_path / "bad.png")
    with pytest.raises(DataFormatError, match="patterns"):
        P.save_scan_preview(obj, probe, positions, patterns[0], tmp_path / "bad.png")


def test_write_is_atomic_and_replaces_existing_file(tmp_path: Path, obj: np.ndarray) -> None:
    target = tmp_path / "amp.png"
    target.write_bytes(b"old")
    P.save_amplitude_png(obj, target, dpi=40)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.stat(target).st_mode & 0o044  # readable by others, not mkstemp's 0600
    with pytest.raises(DataFormatError, match="suffix"):
        P.save_amplitude_png(obj, tmp_path / "amp.notaformat")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amp.png"]  # no temp file left behind


def test_other_formats_and_bad_images(tmp_path: Path, obj: np.ndarray) -> None:
    pdf = P.save_object_figure(obj, tmp_path / "object.pdf")
    assert pdf.read_bytes()[:4] == b"%PDF"
    with pytest.raises(DataFormatError, match="2-D"):
        P.save_object_figure(obj[None], tmp_path / "bad.png")
    with pytest.raises(DataFormatError, match="finite"):
        P.save_phase_png(np.full((4, 4), np.nan), tmp_path / "bad.png")
