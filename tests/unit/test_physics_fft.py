"""Property tests for ptychopinn.physics.fft: the centred, orthonormal transform convention.

Every other physics module relies on three facts checked here: the transforms are unitary (Parseval,
so the probe energy fixes the pattern energy), the zero frequency and the real-space origin both sit
at pixel (N//2, N//2), and the shift theorem has the sign numpy's FFT has (a phase ramp
exp(+2 pi i k.n / N) moves the spectrum by +k).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.physics.fft import far_field_amplitude, fft2c, ifft2c


def _crandn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    re = torch.randn(*shape, generator=g, dtype=real_dtype)
    im = torch.randn(*shape, generator=g, dtype=real_dtype)
    return torch.complex(re, im)


def _energy(x: torch.Tensor) -> torch.Tensor:
    """Energy per image over the last two axes, in float64 so the comparison itself adds no error."""
    return x.abs().to(torch.float64).pow(2).sum(dim=(-2, -1))


# ----------------------------------------------------------------------------------------------------
# Parseval and round trip


@pytest.mark.parametrize("n", [8, 9, 16, 33])
def test_parseval_fft2c_complex128(n: int) -> None:
    x = _crandn(3, 2, n, n, seed=n)
    torch.testing.assert_close(_energy(fft2c(x)), _energy(x), rtol=1e-12, atol=0.0)
    torch.testing.assert_close(_energy(ifft2c(x)), _energy(x), rtol=1e-12, atol=0.0)


def test_parseval_fft2c_float32_path() -> None:
    x = _crandn(4, 32, 32, seed=1, dtype=torch.complex64)
    y = fft2c(x)
    assert y.dtype == torch.complex64
    torch.testing.assert_close(_energy(y), _energy(x), rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("dtype, rtol", [(torch.complex128, 1e-12), (torch.complex64, 1e-5)])
def test_parseval_far_field_amplitude(dtype: torch.dtype, rtol: float) -> None:
    # The forward model's energy bookkeeping (sum A^2 == sum |psi|^2) rests on this.
    psi = _crandn(2, 3, 16, 16, seed=2, dtype=dtype)
    amp = far_field_amplitude(psi)
    assert amp.dtype == (torch.float64 if dtype == torch.complex128 else torch.float32)
    assert amp.shape == psi.shape
    assert bool((amp >= 0).all())
    torch.testing.assert_close(_energy(amp), _energy(psi), rtol=rtol, atol=0.0)


@pytest.mark.parametrize("shape", [(8, 8), (9, 9), (2, 16, 16), (12, 7)])
def test_round_trip(shape: tuple[int, ...]) -> None:
    x = _crandn(*shape, seed=3)
    torch.testing.assert_close(ifft2c(fft2c(x)), x, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(fft2c(ifft2c(x)), x, rtol=0.0, atol=1e-12)


def test_round_trip_float32() -> None:
    x = _crandn(3, 32, 32, seed=4, dtype=torch.complex64)
    torch.testing.assert_close(ifft2c(fft2c(x)), x, rtol=0.0, atol=1e-5)


def test_real_input_is_accepted() -> None:
    x = torch.rand(16, 16, dtype=torch.float64)
    torch.testing.assert_close(fft2c(x), fft2c(x.to(torch.complex128)))


# ----------------------------------------------------------------------------------------------------
# Centring convention


@pytest.mark.parametrize("n", [8, 9, 64])
def test_delta_at_centre_is_flat_with_zero_phase(n: int) -> None:
    # The real-space origin is pixel (N//2, N//2): a delta there has a flat, real, positive spectrum.
    # A delta at (0, 0) instead would give the alternating-sign pattern (-1)^(k+l) for even N.
    x = torch.zeros(n, n, dtype=torch.complex128)
    x[n // 2, n // 2] = 1.0
    k = fft2c(x)
    torch.testing.assert_close(k, torch.full_like(k, 1.0 / n), rtol=0.0, atol=1e-14)
    assert float(torch.angle(k).abs().max()) < 1e-12


@pytest.mark.parametrize("n", [8, 9, 64])
def test_constant_transforms_to_delta_at_centre(n: int) -> None:
    # The zero frequency is pixel (N//2, N//2): all the energy of a constant lands there.
    c = 0.7 - 0.2j
    k = fft2c(torch.full((n, n), c, dtype=torch.complex128))
    expected = torch.zeros(n, n, dtype=torch.complex128)
    expected[n // 2, n // 2] = c * n  # orthonormal: sum over n^2 pixels / n
    torch.testing.assert_close(k, expected, rtol=0.0, atol=1e-12)
    # ...and the inverse takes the delta back to the constant (same centre on both sides).
    torch.testing.assert_close(ifft2c(expected), torch.full((n, n), c, dtype=torch.complex128),
                               rtol=0.0, atol=1e-12)


def test_off_centre_delta_is_a_pure_phase_ramp() -> None:
    # A delta one pixel right of the origin: |spectrum| flat, phase exp(-2 pi i kx / N) with kx
    # counted from the centre column. Pins the sign of the real-space axis too.
    n = 16
    x = torch.zeros(n, n, dtype=torch.complex128)
    x[n // 2, n // 2 + 1] = 1.0
    kx = torch.arange(n, dtype=torch.float64) - n // 2
    expected = (torch.exp(-2j * np.pi * kx / n) / n).expand(n, n)
    torch.testing.assert_close(fft2c(x), expected, rtol=0.0, atol=1e-14)


@pytest.mark.parametrize("dtype, atol", [(torch.complex128, 1e-12), (torch.complex64, 1e-5)])
def test_far_field_amplitude_equals_abs_fft2c_for_even_n(dtype: torch.dtype, atol: float) -> None:
    # far_field_amplitude skips the input ifftshift; for even N that only multiplies the spectrum
    # by (-1)^(k+l), so the amplitude is identical. An off-centre object makes the check non-trivial.
    psi = _crandn(2, 16, 16, seed=5, dtype=dtype)
    psi[..., :5, :3] *= 4.0
    torch.testing.assert_close(far_field_amplitude(psi), fft2c(psi).abs(), rtol=0.0, atol=atol)


# ----------------------------------------------------------------------------------------------------
# Shift theorem: direction of ramps and shifts


def _centred_ramp(n: int, kx: int, ky: int) -> torch.Tensor:
    """exp(+2 pi i (ky (r - N//2) + kx (c - N//2)) / N): a plane wave with phase 0 at the origin."""
    r = torch.arange(n, dtype=torch.float64) - n // 2
    return torch.exp(2j * np.pi * (ky * r[:, None] + kx * r[None, :]) / n)


@pytest.mark.parametrize("kx, ky", [(3, 0), (0, 2), (-2, 5), (1, -4)])
def test_phase_ramp_shifts_spectrum_by_plus_k(kx: int, ky: int) -> None:
    # Multiplying by a phase ramp with +k cycles per field of view moves the spectrum by +k pixels:
    # +kx to higher columns, +ky to higher rows (a tilted illumination shifts the pattern this way).
    n = 16
    x = _crandn(n, n, seed=6)
    shifted = fft2c(x * _centred_ramp(n, kx, ky))
    torch.testing.assert_close(shifted, torch.roll(fft2c(x), shifts=(ky, kx), dims=(-2, -1)),
                               rtol=0.0, atol=1e-12)


def test_plane_wave_lands_at_centre_plus_k() -> None:
    n = 16
    kx, ky = 3, -2
    amp = far_field_amplitude(_centred_ramp(n, kx, ky))
    peak = divmod(int(amp.argmax()), n)
    assert peak == (n // 2 + ky, n // 2 + kx)
    assert float(amp[peak]) == pytest.approx(n, rel=1e-12)  # all energy n^2 in one pixel


@pytest.mark.parametrize("dx, dy", [(1, 0), (0, 3), (-2, 1)])
def test_real_space_shift_is_spectral_phase_ramp(dx: int, dy: int) -> None:
    # Dual statement: moving the content by +(dx, dy) multiplies the spectrum by
    # exp(-2 pi i (kx dx + ky dy) / N), kx, ky counted from the centre pixel; the amplitude is unchanged.
    n = 16
    x = _crandn(n, n, seed=7)
    moved = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    k = torch.arange(n, dtype=torch.float64) - n // 2
    ramp = torch.exp(-2j * np.pi * (k[:, None] * dy + k[None, :] * dx) / n)
    torch.testing.assert_close(fft2c(moved), fft2c(x) * ramp, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(far_field_amplitude(moved), far_field_amplitude(x), rtol=0.0, atol=1e-12)


def test_matches_numpy_reference(device: str) -> None:
    # Independent statement of the convention with numpy.
    x = _crandn(2, 12, 12, seed=8)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"),
                          axes=(-2, -1))
    np.testing.assert_allclose(fft2c(x.to(device)).cpu().numpy(), ref, rtol=0, atol=1e-12)


def test_gradients_flow_through_amplitude() -> None:
    psi = _crandn(1, 8, 8, seed=9).requires_grad_(True)
    far_field_amplitude(psi).pow(2).sum().backward()
    # d/dpsi* of sum|F psi|^2 = psi for unitary F; torch's complex gradient convention gives 2 psi.
    torch.testing.assert_close(psi.grad, 2 * psi.detach(), rtol=0.0, atol=1e-10)
