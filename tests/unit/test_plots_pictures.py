"""Reconstruction pictures decoded and checked: uncovered pixels masked and out of the colour limits, a
scale bar in pixels or physical units, the HSV complex view, float32 TIFFs read back with tifffile, and the
comparison figure with masked pixels and axes in object pixels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from matplotlib.image import imread

from ptychopinn.drawing import MASKED_COLOUR, scale_bar
from ptychopinn.errors import DataFormatError
from ptychopinn.pictures import complex_to_rgb, patch_figure_rgb, save_object_images, save_tiff
from ptychopinn.plots import save_amplitude_png, save_comparison_figure

GREY = np.array([int(MASKED_COLOUR[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0


@pytest.fixture
def recon() -> tuple[np.ndarray, np.ndarray]:
    """A 120x120 canvas covered only in a 60x60 centre; amplitude 0.6..1.0 there, 0 outside."""
    y, x = np.mgrid[0:120, 0:120]
    cov = np.zeros((120, 120), np.float32)
    cov[30:90, 30:90] = 1.0
    amp = 0.6 + 0.4 * (x - 30) / 59.0
    obj = np.where(cov > 0, amp * np.exp(1j * 0.5 * np.sin(y / 9.0)), 0).astype(np.complex64)
    return obj, cov


def _grey_fraction(img: np.ndarray) -> float:
    rgb = img[..., :3]
    return float(np.mean(np.all(np.abs(rgb - GREY) < 0.02, axis=-1)))


def test_uncovered_pixels_are_masked_and_limits_come_from_the_covered_region(tmp_path, recon):
    obj, cov = recon
    masked = imread(save_amplitude_png(obj, tmp_path / "a.png", coverage=cov))
    plain = imread(save_amplitude_png(obj, tmp_path / "b.png"))
    # three quarters of the canvas is uncovered: a large grey area appears only with the coverage
    assert _grey_fraction(masked) > 0.25 and _grey_fraction(plain) < 0.02
    # with the zeros out of the limits, the covered ramp spans the whole gray map (0.6 -> black, 1.0 -> white)
    h, w = masked.shape[:2]
    centre = masked[int(h * 0.3):int(h * 0.7), int(w * 0.15):int(w * 0.8), :3].mean(axis=-1)
    assert centre.min() < 0.1 and centre.max() > 0.9


def test_scale_bar_lengths_and_units():
    assert scale_bar(120) == (20.0, "20 px")
    length, label = scale_bar(512, pixel_size_m=10e-9)  # 512 px of 10 nm: ~1 µm a fifth
    assert label == "1 µm" and math.isclose(length, 100.0)
    length, label = scale_bar(100, pixel_size_m=1e-9)
    assert label == "20 nm" and math.isclose(length, 20.0)
    with pytest.raises(DataFormatError, match="pixel_size_m"):
        scale_bar(100, pixel_size_m=-1.0)


def test_complex_view_hue_is_phase_and_value_is_amplitude():
    obj = np.array([[1.0, 1j, -1.0, 0.5]], dtype=np.complex64)
    rgb = complex_to_rgb(obj)
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(rgb)
    assert np.allclose(hsv[0, :3, 0], [0.5, 0.75, 0.0], atol=1e-3)  # phase 0, pi/2, pi
    assert np.allclose(hsv[0, :, 2], [1, 1, 1, 0.5], atol=1e-3)
    cov = np.array([[True, True, True, False]])
    assert np.allclose(complex_to_rgb(obj, cov)[0, 3], GREY)


def test_object_images_and_tiff_round_trip(tmp_path, recon):
    obj, cov = recon
    files = save_object_images(obj, tmp_path, coverage=cov, origin_xy=(10.0, 20.0), title="Refined")
    assert sorted(files) == ["amplitude.png", "amplitude.tif", "complex.png", "phase.png", "phase.tif"]
    for name, path in files.items():
        assert path.is_file() and (path.stat().st_mode & 0o777) == 0o644, name
    amp = tifffile.imread(files["amplitude.tif"])
    ph = tifffile.imread(files["phase.tif"])
    assert amp.dtype == np.float32 and amp.shape == (120, 120)
    assert np.isnan(amp[0, 0]) and np.isnan(ph[119, 119])
    inside = cov > 0
    np.testing.assert_allclose(amp[inside], np.abs(obj)[inside], rtol=1e-6)
    np.testing.assert_allclose(ph[inside], np.angle(obj)[inside], atol=1e-6)
    assert _grey_fraction(imread(files["complex.png"])) > 0.2
    with tifffile.TiffFile(files["phase.tif"]) as tf:
        assert "radians" in tf.pages[0].description
    with pytest.raises(DataFormatError, match="real 2-D"):
        save_tiff(obj, tmp_path / "c.tif")


def test_comparison_masks_uncovered_pixels_and_uses_object_pixel_axes(tmp_path):
    rng = np.random.default_rng(0)
    t = np.exp(1j * rng.uniform(-3.0, 3.0, (40, 50))).astype(np.complex64)  # a phase that wraps
    r = t * np.exp(0.05j)
    mask = np.ones((40, 50), bool)
    mask[:, :20] = False
    path = save_comparison_figure(r, t, tmp_path / "c.png", mask=mask, origin_xy=(100, 200))
    img = imread(path)
    assert _grey_fraction(img) > 0.05
    fig_plain = imread(save_comparison_figure(r, t, tmp_path / "d.png"))
    assert _grey_fraction(fig_plain) < 0.01


def test_patch_figure_is_an_rgb_image():
    pat = np.abs(np.fft.fftshift(np.fft.fft2(np.ones((32, 32)) * np.exp(1j * np.linspace(0, 1, 32)))))
    patch = (0.8 * np.exp(0.3j * np.ones((32, 32)))).astype(np.complex64)
    img = patch_figure_rgb(pat, patch, title="epoch 3")
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[1] > img.shape[0]
    assert img.std() > 10  # not a blank canvas


def test_masked_images_keep_working_in_the_workflow(tmp_path, recon):
    obj, cov = recon
    with pytest.raises(DataFormatError, match="coverage"):
        save_amplitude_png(obj, tmp_path / "x.png", coverage=np.zeros_like(cov))
    with pytest.raises(DataFormatError, match="coverage"):
        save_amplitude_png(obj, tmp_path / "x.png", coverage=cov[:10])
    assert not Path(tmp_path / "x.png").exists()
