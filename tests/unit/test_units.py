"""Amplitude/intensity detection and conversion (ptychopinn.io.units)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.io.units import detect_units, to_amplitude


def _counts(n: int = 32, m: int = 12, nphotons: float = 1e6, seed: int = 0) -> np.ndarray:
    """Poisson counts [m, n, n] int64 of a disk probe through a weak random phase object."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - n / 2
    probe = (np.hypot(xx, yy) < n / 6).astype(np.complex128)
    obj = np.exp(1j * rng.uniform(0, 0.5, (m, n, n)))
    far = np.fft.fftshift(np.fft.fft2(obj * probe, norm="ortho"), axes=(-2, -1))
    intensity = np.abs(far) ** 2
    intensity *= nphotons / intensity.sum(axis=(1, 2)).mean()
    return rng.poisson(intensity)


def test_simulated_amplitude_is_amplitude() -> None:
    amp = np.sqrt(_counts()).astype(np.float32)
    units, reason = detect_units(amp)
    assert units == "amplitude", reason
    out, used = to_amplitude(amp, "auto")
    assert used == "amplitude"
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, amp)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
def test_counts_are_intensity(dtype: type) -> None:
    counts = _counts().astype(dtype)
    units, reason = detect_units(counts)
    assert units == "intensity"
    assert ("integer dtype" in reason) == np.issubdtype(dtype, np.integer)
    out, used = to_amplitude(counts, "auto")
    assert used == "intensity" and out.dtype == np.float32
    np.testing.assert_allclose(out, np.sqrt(counts.astype(np.float64)), rtol=1e-6)


def test_normalised_amplitude_file_is_amplitude() -> None:
    amp = np.sqrt(_counts(nphotons=1e9)) / 988.0  # scaled so max < 10, as the reference data are
    assert amp.max() < 10
    assert detect_units(amp)[0] == "amplitude"


def test_uint16_near_full_scale_does_not_wrap() -> None:
    counts = np.full((2, 8, 8), 60000, dtype=np.uint16)
    out, used = to_amplitude(counts, "intensity")
    assert used == "intensity"
    np.testing.assert_allclose(out, np.sqrt(60000.0), rtol=1e-6)


def test_float_intensity_with_huge_dynamic_range_is_intensity() -> None:
    x = np.full((3, 64, 64), 0.01)
    x[:, 32, 32] = 1e3  # non-integer floats with max/mean over nonzero pixels ~ 3900
    units, reason = detect_units(x)
    assert units == "intensity"
    assert "max/mean" in reason


def test_binary_low_count_data_are_left_alone() -> None:
    # counts in {0, 1} are ambiguous, and harmless: sqrt leaves them unchanged
    x = (np.arange(3 * 8 * 8).reshape(3, 8, 8) % 2).astype(np.float32)
    assert detect_units(x)[0] == "amplitude"


def test_all_zero_is_amplitude_without_error() -> None:
    units, reason = detect_units(np.zeros((2, 8, 8), np.float32))
    assert units == "amplitude" and "zero" in reason


def test_explicit_units_override_detection() -> None:
    counts = _counts().astype(np.float32)
    out, used = to_amplitude(counts, "amplitude")
    assert used == "amplitude"
    np.testing.assert_array_equal(out, counts)
    out, used = to_amplitude(np.full((1, 8, 8), 0.25), "intensity")
    np.testing.assert_allclose(out, 0.5)


def test_negative_counts_rejected() -> None:
    x = np.ones((2, 8, 8))
    x[1, 2, 3] = -4.0
    with pytest.raises(DataFormatError, match=r"1 negative counts \(first at index \(1, 2, 3\)"):
        to_amplitude(x, "intensity")


def test_bad_units_value() -> None:
    with pytest.raises(ConfigError, match="units must be one of amplitude, intensity, auto, got 'counts'"):
        to_amplitude(np.ones((1, 8, 8)), "counts")


def test_complex_and_non_numeric_patterns_rejected() -> None:
    with pytest.raises(DataFormatError, match="must be real.*found complex data"):
        detect_units(np.ones((1, 8, 8), np.complex64))
    with pytest.raises(DataFormatError, match="numeric"):
        to_amplitude(np.ones((1, 8, 8), bool), "amplitude")


def test_decision_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ptychopinn.io.units"):
        to_amplitude(np.ones((1, 8, 8), np.uint16) * 7, "auto")
    assert "detected as intensity" in caplog.text
