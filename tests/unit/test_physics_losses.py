"""Property tests for ptychopinn.physics.losses and the scales of ptychopinn.data.normalize.

The training signal is the Poisson likelihood of photon counts k = (s * meas)^2 given the rate
lam = (s * pred)^2. poisson_loss is a rescaled deviance rather than the raw NLL; the tests below
prove it is the NLL up to a data-only constant and a positive factor (so it has the same minimiser
and the same descent directions), and that it is zero at a perfect fit. The scales that define s
and the network-input units are tested at the end (reference section 1.3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptychopinn.data import normalize
from ptychopinn.physics.losses import (
    amplitude_mae,
    poisson_deviance,
    poisson_loss,
    realspace_mae,
    wrap_phase,
)


def _amps(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.1 + torch.rand(*shape, generator=g, dtype=torch.float64)).to(dtype)


# ----------------------------------------------------------------------------------------------------
# Poisson NLL and deviance


def _nll(lam: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Poisson NLL without ``log k!``, ``lam - k log lam`` with ``0 log 0 = 0``."""
    return lam - torch.xlogy(k, lam)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_deviance_is_torch_poisson_nll_minus_its_value_at_the_data(dtype: torch.dtype, rtol: float) -> None:
    # Integer counts k (including 0) and an arbitrary rate: deviance = NLL(lam) - NLL(k), elementwise.
    k = torch.tensor([[0.0, 1.0, 2.0, 5.0], [17.0, 40.0, 100.0, 3.0]], dtype=torch.float64)
    lam = (7.0 * _amps((2, 4), seed=0)) ** 2
    nll = -torch.distributions.Poisson(lam, validate_args=False).log_prob(k) - torch.lgamma(k + 1)
    expected = nll - _nll(k, k)
    got = poisson_deviance(lam.to(dtype), k.to(dtype), 1e-12)
    assert got.dtype == dtype and got.shape == lam.shape
    torch.testing.assert_close(got.to(torch.float64), expected, rtol=rtol, atol=rtol)
    # exactly zero at lam == k, also where k == 0
    assert float(poisson_deviance(k.to(dtype), k.to(dtype), 1e-12).abs().max()) == 0.0


def test_poisson_loss_zero_at_perfect_fit_and_positive_otherwise() -> None:
    scale = 988.2  # N = 64 at 1e9 photons: counts ~1e5 per pixel, the float32 worst case
    meas = _amps((2, 1, 16, 16), seed=1, dtype=torch.float32)
    meas[0, 0, 0, :4] = 0.0  # zero-count pixels must not produce NaN/inf (k log k -> 0)
    assert abs(float(poisson_loss(meas, meas, scale))) <= 1e-6
    assert abs(float(poisson_loss(meas.double(), meas.double(), scale))) <= 1e-12
    for pred in (meas * 1.01, meas * 0.99, meas + 0.001, _amps((2, 1, 16, 16), seed=2, dtype=torch.float32)):
        value = poisson_loss(pred, meas, scale)
        assert torch.isfinite(value) and float(value) > 0.0


def test_poisson_loss_matches_deviance_formula() -> None:
    # Independent numpy deviance sum(lam - k - k log(lam/k)) / sum(k), with 0 log 0 = 0.
    scale = 12.0
    meas = _amps((3, 2, 5, 5), seed=3)
    meas[0, 0, 0, 0] = 0.0
    pred = _amps((3, 2, 5, 5), seed=4)
    lam = (scale * pred.numpy()) ** 2
    k = (scale * meas.numpy()) ** 2
    klog = np.where(k > 0, k * np.log(np.where(k > 0, lam / np.maximum(k, 1e-300), 1.0)), 0.0)
    expected = (lam - k - klog).sum() / k.sum()
    assert float(poisson_loss(pred, meas, scale)) == pytest.approx(expected, rel=1e-10)


def test_poisson_loss_gradient_is_nll_gradient_over_total_counts() -> None:
    # poisson_loss = (sum NLL + data-only constant) / sum(k): the gradients differ only by the
    # positive factor 1 / sum(k), so both losses share minimiser and descent directions.
    scale = 30.0
    meas = _amps((2, 2, 6, 6), seed=5)
    pred = _amps((2, 2, 6, 6), seed=6).requires_grad_(True)
    k = (scale * meas) ** 2
    g_loss, = torch.autograd.grad(poisson_loss(pred, meas, scale), pred)
    g_nll, = torch.autograd.grad(_nll((scale * pred) ** 2, k).sum(), pred)
    total_counts = float(k.sum())
    torch.testing.assert_close(g_loss, g_nll / total_counts, rtol=1e-10, atol=1e-14)
    # The offset between them is the same for a second prediction: it depends on the data only.
    pred2 = _amps((2, 2, 6, 6), seed=7)
    offsets = [float(poisson_loss(p, meas, scale)) * total_counts - float(_nll((scale * p) ** 2, k).sum())
               for p in (pred.detach(), pred2)]
    assert offsets[0] == pytest.approx(offsets[1], rel=1e-9)


def test_poisson_loss_float32_gradient_matches_float64() -> None:
    scale = 988.2
    meas = _amps((1, 1, 8, 8), seed=8)
    pred = meas * (1 + 0.01 * torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(9),
                                           dtype=torch.float64))
    p32 = pred.float().requires_grad_(True)
    p64 = pred.clone().requires_grad_(True)
    poisson_loss(p32, meas.float(), scale).backward()
    poisson_loss(p64, meas, scale).backward()
    assert p32.grad.dtype == torch.float32
    torch.testing.assert_close(p32.grad.double(), p64.grad, rtol=1e-3, atol=1e-3 * float(p64.grad.abs().max()))


def test_poisson_loss_is_dose_independent_for_relative_errors() -> None:
    # For pred = meas (1 + d) the normalised deviance does not depend on s: one learning rate fits
    # every dose (the design reason for dividing by sum(k)).
    meas = _amps((2, 1, 8, 8), seed=10)
    pred = meas * 1.05
    values = [float(poisson_loss(pred, meas, s)) for s in (3.0, 31.25, 988.2)]
    assert values[0] == pytest.approx(values[1], rel=1e-9) == pytest.approx(values[2], rel=1e-9)
    d = 0.05
    assert values[0] == pytest.approx((1 + d) ** 2 - 1 - 2 * math.log(1 + d), rel=1e-9)


def test_poisson_loss_accepts_per_sample_scale_tensor() -> None:
    meas = _amps((3, 1, 4, 4), seed=11)
    pred = _amps((3, 1, 4, 4), seed=12)
    s = torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64).view(3, 1, 1, 1)
    torch.testing.assert_close(poisson_loss(pred, meas, s), poisson_loss(pred, meas, 2.0))


def test_gradcheck_poisson_loss_float64() -> None:
    # Needs float64 arithmetic inside the loss: the losses keep float64 inputs in float64 (they used
    # to cast everything to float32, which made a float64 gradcheck meaningless).
    meas = _amps((1, 2, 3, 3), seed=13)
    pred = _amps((1, 2, 3, 3), seed=14).requires_grad_(True)
    assert poisson_loss(pred, meas, 5.0).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda p: poisson_loss(p, meas, 5.0), (pred,))
    lam = (5.0 * pred.detach()) ** 2
    assert torch.autograd.gradcheck(lambda x: poisson_deviance(x, (5.0 * meas) ** 2, 1e-12),
                                    (lam.requires_grad_(True),))


def test_training_loss_and_refinement_misfit_are_one_deviance() -> None:
    # Refinement's Poisson misfit of the far field s*pred against the amplitudes s*meas, over the total
    # counts, is training's loss: both are poisson_deviance, and their eps (1e-12 counts against 1e-6 of
    # the mean count) differ by far less than float32 round-off here.
    from ptychopinn.physics.noise import PoissonNoise

    scale = 31.25
    meas = _amps((3, 1, 8, 8), seed=20, dtype=torch.float32)
    meas[0, 0, 0, :3] = 0.0
    pred = _amps((3, 1, 8, 8), seed=21, dtype=torch.float32)
    weights = (torch.arange(64).view(8, 8) % 5 != 0).float()
    far = torch.polar(scale * pred[:, 0], torch.ones_like(pred[:, 0]))
    for w in (None, weights):
        misfit = PoissonNoise().pattern_misfit(far, scale * meas[:, 0], w).sum()
        counts = ((scale * meas) ** 2 * (1.0 if w is None else w)).sum()
        assert float(misfit / counts) == pytest.approx(float(poisson_loss(pred, meas, scale, w)), rel=1e-5)


def test_low_precision_inputs_are_computed_in_float32() -> None:
    meas = _amps((1, 1, 4, 4), seed=15, dtype=torch.bfloat16)
    pred = _amps((1, 1, 4, 4), seed=16, dtype=torch.bfloat16)
    assert poisson_loss(pred, meas, 10.0).dtype == torch.float32
    assert amplitude_mae(pred, meas).dtype == torch.float32


# ----------------------------------------------------------------------------------------------------
# amplitude MAE


def test_amplitude_mae_hand_example() -> None:
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
    meas = torch.tensor([2.0, 2.0, 2.0, 2.0])
    # mean |diff| = (1 + 0 + 1 + 2) / 4 = 1; mean(meas) = 2.
    assert float(amplitude_mae(pred, meas)) == pytest.approx(0.5)
    assert float(amplitude_mae(meas, meas)) == 0.0
    # Relative: the intensity scale cancels.
    assert float(amplitude_mae(37 * pred, 37 * meas)) == pytest.approx(0.5)


def test_gradcheck_amplitude_mae_float64() -> None:
    # |pred - meas| is not differentiable at 0: keep every difference at least 0.1 away from it,
    # with both signs present so both branches of the kink are exercised.
    meas = _amps((1, 2, 3, 3), seed=17)
    sign = torch.where(torch.arange(18).view(1, 2, 3, 3) % 2 == 0, 1.0, -1.0).double()
    pred = meas + sign * (0.1 + 0.1 * _amps((1, 2, 3, 3), seed=18))
    assert torch.autograd.gradcheck(lambda p, m: amplitude_mae(p, m),
                                    (pred.requires_grad_(True), meas.clone().requires_grad_(True)))


# ----------------------------------------------------------------------------------------------------
# phase wrapping and real-space MAE


def test_wrap_phase_range_and_values() -> None:
    pi = math.pi
    phi = torch.tensor([0.0, pi, -pi, 1.5 * pi, -1.5 * pi, 3 * pi, 7.0, -7.0, 0.5], dtype=torch.float64)
    expected = torch.tensor([0.0, pi, pi, -0.5 * pi, 0.5 * pi, pi, 7.0 - 2 * pi, -7.0 + 2 * pi, 0.5],
                            dtype=torch.float64)
    torch.testing.assert_close(wrap_phase(phi), expected, rtol=0.0, atol=1e-12)
    x = torch.linspace(-40.0, 40.0, 2001, dtype=torch.float64)
    w = wrap_phase(x)
    assert bool((w > -pi).all()) and bool((w <= pi + 1e-12).all())
    # Wrapping changes the angle by a multiple of 2 pi only...
    torch.testing.assert_close(torch.cos(w), torch.cos(x), rtol=0.0, atol=1e-12)
    torch.testing.assert_close(torch.sin(w), torch.sin(x), rtol=0.0, atol=1e-12)
    # ...and leaves angles already in range alone.
    inside = torch.linspace(-3.1, 3.1, 101, dtype=torch.float64)
    torch.testing.assert_close(wrap_phase(inside), inside, rtol=0.0, atol=0.0)


def test_realspace_mae_zero_for_identical_and_hand_values() -> None:
    g = torch.Generator().manual_seed(19)
    amp = 0.2 + torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64)
    phase = (torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    obj = torch.polar(amp, phase)
    assert float(realspace_mae(obj, obj)) == 0.0
    # Amplitude error 0.5 everywhere, phase equal.
    assert float(realspace_mae(torch.polar(amp + 0.5, phase), obj)) == pytest.approx(0.5, rel=1e-12)
    # Phase error 0.3 everywhere, amplitude equal.
    assert float(realspace_mae(torch.polar(amp, phase + 0.3), obj)) == pytest.approx(0.3, rel=1e-9)


def test_realspace_mae_invariant_to_two_pi_phase_wraps() -> None:
    amp = torch.full((1, 1, 2, 2), 0.8, dtype=torch.float64)
    phase = torch.tensor([[[[0.1, -2.0], [3.0, -3.1]]]], dtype=torch.float64)
    true_obj = torch.polar(amp, phase)
    for k in (-2, 1, 3):
        assert float(realspace_mae(torch.polar(amp, phase + 2 * math.pi * k), true_obj)) <= 1e-12
    # Across the +-pi cut: pi - 0.05 vs -pi + 0.05 is an error of 0.1, not 2 pi - 0.1.
    a = torch.polar(torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.full((1, 1, 1, 1), math.pi - 0.05,
                                                                             dtype=torch.float64))
    b = torch.polar(torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.full((1, 1, 1, 1), -math.pi + 0.05,
                                                                             dtype=torch.float64))
    assert float(realspace_mae(a, b)) == pytest.approx(0.1, rel=1e-9)


# ----------------------------------------------------------------------------------------------------
# data.normalize: input scale and intensity scale


def test_input_scale_gives_mean_pattern_energy_n_over_2_squared() -> None:
    rng = np.random.default_rng(20)
    n = 16
    amps = rng.gamma(2.0, 3.0, size=(7, n, n)) * rng.uniform(0.1, 10.0, size=(7, 1, 1))
    a = normalize.input_scale(amps)
    energies = ((a * amps) ** 2).sum(axis=(1, 2))
    assert energies.mean() == pytest.approx((n / 2) ** 2, rel=1e-12)
    # Per-pixel mean X^2 is 1/4 whatever N (RMS amplitude 0.5).
    assert ((a * amps) ** 2).mean() == pytest.approx(0.25, rel=1e-12)
    # Scaling the raw data by c scales a by 1/c: the network input does not depend on the dose unit.
    assert normalize.input_scale(5.0 * amps) == pytest.approx(a / 5.0, rel=1e-12)


def test_chunked_memmap_equals_direct(tmp_path, monkeypatch) -> None:
    # A small chunk size forces several chunks plus a ragged last one on a disk-backed array.
    monkeypatch.setattr(normalize, "_CHUNK", 3)
    rng = np.random.default_rng(21)
    data = rng.uniform(0.0, 4.0, size=(11, 8, 8)).astype(np.float32)
    mm = np.memmap(tmp_path / "diff.dat", dtype=np.float32, mode="w+", shape=data.shape)
    mm[:] = data
    mm.flush()
    ro = np.memmap(tmp_path / "diff.dat", dtype=np.float32, mode="r", shape=data.shape)
    direct = float((data.astype(np.float64) ** 2).sum(axis=(1, 2)).mean())
    assert normalize.mean_pattern_energy(ro) == pytest.approx(direct, rel=1e-12)
    assert normalize.input_scale(ro) == pytest.approx(math.sqrt(16.0 / direct), rel=1e-12)
    # A subset given by (unsorted) indices uses only those patterns.
    idx = np.array([9, 2, 5, 0, 7])
    sub = float((data[np.sort(idx)].astype(np.float64) ** 2).sum(axis=(1, 2)).mean())
    assert normalize.mean_pattern_energy(ro, idx) == pytest.approx(sub, rel=1e-12)
    assert normalize.input_scale(ro, idx) == pytest.approx(math.sqrt(16.0 / sub), rel=1e-12)


def test_uint16_counts_are_squared_in_float64(tmp_path) -> None:
    # 300^2 = 90000 overflows uint16 (reference pitfall 5); the energy must be the true value.
    data = np.full((2, 4, 4), 300, dtype=np.uint16)
    assert normalize.mean_pattern_energy(data) == pytest.approx(16 * 90000.0)


def test_input_scale_rejects_all_zero() -> None:
    with pytest.raises(ValueError):
        normalize.input_scale(np.zeros((3, 4, 4)))


@pytest.mark.parametrize("n, nphotons, expected", [(64, 1e9, 988.2117688026186), (64, 1e6, 31.25),
                                                   (128, 1e9, 494.1058844013093)])
def test_intensity_scale_examples(n: int, nphotons: float, expected: float) -> None:
    assert normalize.intensity_scale(n, nphotons) == pytest.approx(expected, rel=1e-12)


def test_intensity_scale_turns_normalised_patterns_into_nphotons() -> None:
    # With X normalised to mean energy (N/2)^2, (s X)^2 are counts with mean total nphotons.
    rng = np.random.default_rng(22)
    n, nphotons = 32, 1e7
    amps = rng.uniform(0, 1, (5, n, n))
    x = normalize.input_scale(amps) * amps
    s = normalize.intensity_scale(n, nphotons)
    assert ((s * x) ** 2).sum(axis=(1, 2)).mean() == pytest.approx(nphotons, rel=1e-12)
