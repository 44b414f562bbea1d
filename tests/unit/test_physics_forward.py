"""Property tests for ptychopinn.physics.probe and ptychopinn.physics.forward.

The forward model fixes the units of everything the network predicts: the probe is normalised to
energy (probe_scale N / 4)^2, so by Parseval a fully transmitting object produces patterns of that
energy, and an object of amplitude 2 / probe_scale matches the input normalisation (N/2)^2 of
ptychopinn.data.normalize. These tests check those identities, the probe helpers, the precision
policy under autocast and an independent numpy computation of the whole pipeline.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptychopinn.physics.fft import far_field_amplitude
from ptychopinn.physics.forward import ForwardModel
from ptychopinn.physics.probe import (
    central_disk,
    central_window,
    gaussian_kernel1d,
    gaussian_smooth,
    normalize_probe,
)

N = 32


def _probe(n: int = N, seed: int = 0) -> torch.Tensor:
    """A soft disk with a quadratic phase and some random speckle: complex, asymmetric, any scale."""
    rng = np.random.default_rng(seed)
    ax = np.arange(n) - n // 2
    rr = ax[:, None] ** 2 + ax[None, :] ** 2
    amp = 1.0 / (1.0 + np.exp((np.sqrt(rr) - n / 4) / 1.5))
    phase = 0.02 * rr + 0.3 * rng.standard_normal((n, n))
    return torch.from_numpy(37.0 * amp * np.exp(1j * phase)).to(torch.complex64)


def _obj(shape: tuple[int, ...], seed: int = 1, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.2, 1.0, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))
    return torch.from_numpy(a).to(dtype)


# ----------------------------------------------------------------------------------------------------
# probe helpers


@pytest.mark.parametrize("probe_scale", [4.0, 2.0, 10.0])
def test_normalize_probe_energy_and_phase(probe_scale: float) -> None:
    p = _probe()
    out = normalize_probe(p, probe_scale)
    assert out.dtype == torch.complex64 and out.shape == p.shape
    energy = float(out.abs().to(torch.float64).pow(2).sum())
    assert energy == pytest.approx((probe_scale * N / 4) ** 2, rel=1e-5)
    # A positive real rescaling: the phase map is untouched.
    torch.testing.assert_close(torch.angle(out), torch.angle(p), rtol=0.0, atol=1e-5)


def test_normalize_probe_is_scale_invariant() -> None:
    p = _probe()
    torch.testing.assert_close(normalize_probe(p), normalize_probe(1e-3 * p), rtol=1e-5, atol=1e-6)


def test_normalize_probe_rejects_zero_and_nan() -> None:
    with pytest.raises(ValueError):
        normalize_probe(torch.zeros(8, 8, dtype=torch.complex64))
    bad = _probe(8)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError):
        normalize_probe(bad)


@pytest.mark.parametrize("n", [8, 32, 64, 17])
def test_central_disk_shape_sum_and_centre(n: int) -> None:
    d = central_disk(n)
    assert d.shape == (n, n) and d.dtype == torch.float32
    ax = np.arange(n) - n // 2
    expected = (ax[:, None] ** 2 + ax[None, :] ** 2 <= (n / 4) ** 2).astype(np.float32)
    np.testing.assert_array_equal(d.numpy(), expected)
    assert float(d[n // 2, n // 2]) == 1.0 and float(d[0, 0]) == 0.0
    if n >= 32:  # pixel count approaches the disk area pi r^2
        assert float(d.sum()) == pytest.approx(math.pi * (n / 4) ** 2, rel=0.05)
    # Point-symmetric about pixel (n//2, n//2) (a disk centred half a pixel off would fail this); for
    # even n the first row/column has no mirror partner.
    core = d[1:, 1:] if n % 2 == 0 else d
    torch.testing.assert_close(core, torch.flip(core, dims=(0, 1)), rtol=0.0, atol=0.0)


def test_central_disk_custom_radius() -> None:
    assert float(central_disk(16, radius=0.0).sum()) == 1.0
    assert float(central_disk(16, radius=1.0).sum()) == 5.0  # centre + 4 neighbours


@pytest.mark.parametrize("n", [8, 32, 64])
def test_central_window(n: int) -> None:
    w = central_window(n)
    assert w.shape == (n, n) and w.dtype == torch.float32
    assert float(w.sum()) == (n // 2) ** 2
    lo, hi = n // 4, n // 4 + n // 2
    assert float(w[lo:hi, lo:hi].min()) == 1.0
    assert float(w[n // 2, n // 2]) == 1.0
    assert float(w[lo - 1].max()) == 0.0 and float(w[:, hi].max()) == 0.0


def test_gaussian_kernel_normalised_and_symmetric() -> None:
    g = gaussian_kernel1d(1.7)
    assert g.numel() == 2 * math.ceil(3 * 1.7) + 1
    assert float(g.sum()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(g, torch.flip(g, dims=(0,)))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_gaussian_smooth_preserves_sum_away_from_edges(dtype: torch.dtype) -> None:
    # A field supported in the middle (farther than 3 sigma from every edge): zero padding loses
    # nothing and the normalised kernel keeps the complex sum. Also the dtype is kept (a float32
    # kernel used to make complex128 input fail in conv2d).
    field = torch.zeros(2, 40, 40, dtype=dtype)
    field[:, 15:25, 12:27] = _obj((2, 10, 15), seed=3, dtype=dtype)
    out = gaussian_smooth(field, 1.5)
    assert out.dtype == dtype and out.shape == field.shape
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    torch.testing.assert_close(out.sum(dim=(-2, -1)), field.sum(dim=(-2, -1)), rtol=tol, atol=tol)
    assert not torch.allclose(out, field)  # it did blur


def test_gaussian_smooth_width_matches_sigma() -> None:
    # The blurred delta's variance along each axis is sigma^2 (minus the 3-sigma truncation, ~3%).
    sigma = 2.0
    field = torch.zeros(41, 41, dtype=torch.complex128)
    field[20, 20] = 1.0
    out = gaussian_smooth(field, sigma).real
    ax = torch.arange(41, dtype=torch.float64) - 20
    var_rows = float((out.sum(dim=1) * ax**2).sum())
    var_cols = float((out.sum(dim=0) * ax**2).sum())
    assert var_rows == pytest.approx(sigma**2, rel=0.05)
    assert var_cols == pytest.approx(sigma**2, rel=0.05)
    # Real and imaginary parts are blurred independently by the same real kernel.
    torch.testing.assert_close(gaussian_smooth(1j * field, sigma), 1j * gaussian_smooth(field, sigma))


def test_gaussian_smooth_sigma_zero_is_identity() -> None:
    field = _obj((3, 8, 8), seed=4)
    assert gaussian_smooth(field, 0.0) is field
    assert gaussian_smooth(field, -1.0) is field


# ----------------------------------------------------------------------------------------------------
# ForwardModel


@pytest.mark.parametrize("probe_scale", [4.0, 2.0])
def test_transmitting_object_pattern_energy(probe_scale: float, device: str) -> None:
    # Parseval: sum A^2 = sum |P O|^2 = sum |P|^2 for O = 1.
    model = ForwardModel(_probe(), probe_scale=probe_scale).to(device)
    amp = model(torch.ones(3, 2, N, N, dtype=torch.complex64, device=device))
    assert amp.shape == (3, 2, N, N) and amp.dtype == torch.float32
    energy = amp.to(torch.float64).pow(2).sum(dim=(-2, -1))
    torch.testing.assert_close(energy, torch.full_like(energy, (probe_scale * N / 4) ** 2), rtol=1e-5, atol=0.0)


def test_object_amplitude_two_over_probe_scale_matches_input_normalisation() -> None:
    # The documented link to data.normalize: amplitude 2 / probe_scale (0.5 at the default 4)
    # yields pattern energy (N/2)^2, the mean energy of a normalised network input.
    model = ForwardModel(_probe())
    amp = model(torch.full((1, 1, N, N), 0.5, dtype=torch.complex64))
    assert float(amp.to(torch.float64).pow(2).sum()) == pytest.approx((N / 2) ** 2, rel=1e-5)


def test_matches_independent_numpy_computation(device: str) -> None:
    probe_scale = 4.0
    p = _probe(seed=5)
    model = ForwardModel(p, probe_scale=probe_scale).to(device)
    obj = _obj((2, 3, N, N), seed=6)
    got = model(obj.to(device)).cpu().numpy()
    p64 = p.numpy().astype(np.complex128)
    p_norm = p64 * (probe_scale * N / 4) / np.sqrt((np.abs(p64) ** 2).sum())
    want = np.abs(np.fft.fftshift(np.fft.fft2(p_norm * obj.numpy().astype(np.complex128), norm="ortho"),
                                  axes=(-2, -1)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())


def test_probe_broadcasts_over_batch_and_channels() -> None:
    # Every (b, c) pattern uses the same [N, N] probe exactly once (pitfall 10: a probe broadcast
    # into the wrong axis once multiplied the field by the batch size).
    model = ForwardModel(_probe())
    obj = _obj((4, 3, N, N), seed=7)
    full = model(obj)
    for b in range(4):
        for c in range(3):
            torch.testing.assert_close(full[b, c], model(obj[b:b + 1, c:c + 1])[0, 0])


def test_output_float32_under_bf16_autocast() -> None:
    # The physics leaves any autocast region: complex64 in, float32 out, same numbers as without it,
    # also with the smoothing convolution (conv2d is on the CPU autocast list).
    model = ForwardModel(_probe(), gaussian_smoothing_sigma=1.0)
    obj = _obj((2, 1, N, N), seed=8)
    ref = model(obj)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(obj)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0.0, atol=0.0)


def test_complex128_input_is_computed_in_complex64() -> None:
    model = ForwardModel(_probe())
    obj = _obj((1, 1, N, N), seed=9, dtype=torch.complex128)
    out = model(obj)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(obj.to(torch.complex64)))


def test_probe_mask_zeroes_illumination_outside_disk() -> None:
    p = _probe()
    model = ForwardModel(p, probe_mask=True)
    disk = central_disk(N).bool()
    psi = model.illuminate(torch.ones(1, 1, N, N, dtype=torch.complex64))[0, 0]
    assert float(psi[~disk].abs().max()) == 0.0
    torch.testing.assert_close(psi[disk], normalize_probe(p)[disk])
    # Without the mask the probe's tail outside the disk is illuminated.
    unmasked = ForwardModel(p).illuminate(torch.ones(1, 1, N, N, dtype=torch.complex64))[0, 0]
    assert float(unmasked[~disk].abs().max()) > 0.0


def test_smoothing_is_applied_to_the_exit_wave() -> None:
    p = _probe()
    model = ForwardModel(p, gaussian_smoothing_sigma=1.0)
    obj = _obj((1, 2, N, N), seed=10)
    torch.testing.assert_close(model(obj), far_field_amplitude(gaussian_smooth(obj * normalize_probe(p), 1.0)))


def test_probe_buffer_by_default_and_parameter_when_trainable() -> None:
    fixed = ForwardModel(_probe())
    assert "probe" in fixed.state_dict() and not list(fixed.parameters())
    assert fixed.N == N

    model = ForwardModel(_probe(), probe_trainable=True)
    assert isinstance(model.probe, torch.nn.Parameter) and model.probe.requires_grad
    assert [name for name, _ in model.named_parameters()] == ["probe"]
    obj = _obj((2, 1, N, N), seed=11).requires_grad_(True)
    target = torch.rand(2, 1, N, N)
    (model(obj) - target).pow(2).sum().backward()
    assert model.probe.grad is not None
    assert model.probe.grad.shape == (N, N)
    assert float(model.probe.grad.abs().sum()) > 0.0
    assert obj.grad is not None and float(obj.grad.abs().sum()) > 0.0


def test_rejects_non_square_probe() -> None:
    with pytest.raises(ValueError):
        ForwardModel(torch.ones(8, 6, dtype=torch.complex64))
    with pytest.raises(ValueError):
        ForwardModel(torch.ones(2, 8, 8, dtype=torch.complex64))
