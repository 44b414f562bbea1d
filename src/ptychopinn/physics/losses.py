"""Likelihoods and losses, each with its normalisation stated.

Notation: ``pred`` is the model's far-field amplitude and ``meas`` the measured amplitude, both in
normalised units ``[B, C, N, N]`` float32; ``scale`` is the intensity scale ``s`` that turns them
into photon-count amplitudes, so the expected counts are ``lam = (s * pred)**2`` and the measured
counts ``k = (s * meas)**2``.

* :func:`poisson_deviance`: ``lam - k - k*log((lam + eps)/(k + eps))`` per pixel, the one definition of
  the Poisson deviance (training's :func:`poisson_loss` and refinement's
  :class:`~ptychopinn.physics.noise.PoissonNoise` both use it, each with its own ``eps``). It is the
  negative log-likelihood ``lam - k*log(lam)`` minus its value at ``lam = k``, a data-only term.
* :func:`poisson_loss`: the Poisson deviance summed over all pixels of the batch divided by the total
  measured counts ``sum(k)``. It differs from the NLL by a data-only constant (same gradients up to the
  positive factor ``1/sum(k)``), is zero for a perfect fit, and its value does not grow with the dose, so
  one learning rate fits all doses.
* :func:`amplitude_mae`: ``mean |s*pred - s*meas| / mean(s*meas)``, a relative error.
* :func:`realspace_mae`: mean absolute amplitude error plus mean absolute wrapped phase error of
  object patches, for supervised training (radians and amplitude units add; both are O(1)).
"""

from __future__ import annotations

import math

import torch

_TINY = 1e-12


def _real(x: torch.Tensor) -> torch.Tensor:
    """Loss precision: float32 for float32/half/bfloat16 inputs (never below), float64 kept as is
    (so float64 checks such as gradcheck see float64 arithmetic)."""
    return x if x.dtype == torch.float64 else x.float()


def poisson_deviance(lam: torch.Tensor, k: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Per-pixel Poisson deviance ``lam - k - k*log((lam + eps)/(k + eps))``, shape and dtype of ``lam``.

    ``lam`` are the expected and ``k`` the measured counts (>= 0, one shape); ``eps`` > 0 keeps the log
    finite where ``lam`` or ``k`` is 0. Adding it to both sides of the ratio makes the deviance exactly 0
    where ``lam == k`` (in any precision) and ``0 * log(0)`` terms 0 without a branch.
    """
    return (lam - k).sub_(k * torch.log((lam + eps) / (k + eps)))


def poisson_loss(pred: torch.Tensor, meas: torch.Tensor, scale: float | torch.Tensor,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised Poisson deviance (scalar): ``sum(w (lam - k - k log(lam/k))) / sum(w k)``.

    ``weights``: optional detector-pixel weights broadcastable to ``pred`` (``[N, N]``; 1 = measured,
    0 = masked), so masked pixels neither add to the deviance nor pull the prediction towards 0.
    The log's ``eps`` (:func:`poisson_deviance`) is a fixed 1e-12 counts: it only has to keep the log
    finite, so the gradient stays the exact NLL gradient over ``sum(w k)`` wherever ``lam > 0``.
    """
    lam = (scale * _real(pred)).pow(2)
    k = (scale * _real(meas)).pow(2)
    dev = poisson_deviance(lam, k, _TINY)
    if weights is not None:
        dev, k = dev * weights, k * weights
    return dev.sum() / k.sum().clamp_min(_TINY)


def amplitude_mae(pred: torch.Tensor, meas: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Relative mean absolute error of amplitudes (scalar): ``mean|pred - meas| / mean(meas)``, over the
    measured pixels only when ``weights`` (``[N, N]`` 1/0, see :func:`poisson_loss`) are given.

    The intensity scale cancels in this ratio, so it is not an argument.
    """
    pred, meas = _real(pred), _real(meas)
    err = (pred - meas).abs()
    if weights is not None:
        return (err * weights).sum() / (meas * weights).sum().clamp_min(_TINY)
    return err.mean() / meas.mean().clamp_min(_TINY)


def wrap_phase(phi: torch.Tensor) -> torch.Tensor:
    """Wrap radians to ``(-pi, pi]``."""
    return phi - 2 * math.pi * torch.ceil((phi - math.pi) / (2 * math.pi))


def realspace_mae(pred_obj: torch.Tensor, true_obj: torch.Tensor) -> torch.Tensor:
    """Mean |amplitude error| + mean |wrapped phase error| of complex patches ``[B, C, N, N]``."""
    amp = (pred_obj.abs() - true_obj.abs()).abs().mean()
    phase = wrap_phase(torch.angle(pred_obj) - torch.angle(true_obj)).abs().mean()
    return amp + phase
