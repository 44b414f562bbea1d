"""Exact sub-pixel geometry helpers: integer shifts are rolls, the shift is unitary with the negative
shift as adjoint, and positions split into an integer window corner plus a fraction in [-0.5, 0.5)."""

from __future__ import annotations

import numpy as np
import torch

from ptychopinn.physics.shift import fourier_shift, split_positions


def test_integer_shift_is_a_roll_in_the_documented_direction() -> None:
    x = torch.randn(2, 16, 12, dtype=torch.complex128)
    y = fourier_shift(x, torch.tensor([[3.0, 0.0], [0.0, -2.0]]))
    assert torch.allclose(y[0], torch.roll(x[0], 3, dims=1))  # +dx moves content right
    assert torch.allclose(y[1], torch.roll(x[1], -2, dims=0))  # -dy moves content up


def test_fractional_shift_is_unitary_and_its_adjoint_is_the_negative_shift() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 16, dtype=torch.complex128, generator=g)
    z = torch.randn(4, 16, 16, dtype=torch.complex128, generator=g)
    s = torch.rand(4, 2, generator=g, dtype=torch.float64) - 0.5
    y = fourier_shift(x, s)
    assert torch.allclose(y.abs().square().sum(), x.abs().square().sum())
    assert torch.allclose(torch.vdot(y.flatten(), z.flatten()), torch.vdot(x.flatten(), fourier_shift(z, -s).flatten()))
    assert torch.allclose(fourier_shift(y, -s), x)


def test_fractional_shift_keeps_a_band_limited_signal_exact() -> None:
    n = 32
    t = np.arange(n)
    f = lambda u: np.exp(2j * np.pi * 3 * u / n) + 0.5 * np.cos(2 * np.pi * 5 * u / n)  # noqa: E731
    img = torch.from_numpy(f(t)[None, None, :] * np.ones((1, n, 1)))
    out = fourier_shift(img, torch.tensor([[0.37, 0.0]]))
    assert np.allclose(out[0, 0].numpy(), f(t - 0.37), atol=1e-10)


def test_split_positions_rounds_to_the_nearest_window() -> None:
    corner, frac = split_positions(np.array([[10.4, 7.6], [3.5, -0.5], [8.0, 8.0]]), 8)
    assert corner.tolist() == [[6, 4], [0, -4], [4, 4]]
    assert np.allclose(frac, [[0.4, -0.4], [-0.5, -0.5], [0.0, 0.0]])
    assert np.all((frac >= -0.5) & (frac < 0.5))
