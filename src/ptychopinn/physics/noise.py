"""Noise models of the measured far field: the misfit an iterative engine minimises, its descent
direction in the far field, and the derivatives of the misfit along a line (for exact step lengths).

Arrays: ``far`` is the modelled far field ``Psi`` ``[b, N, N]`` complex64, ``measured`` the measured
amplitude ``A = sqrt(counts)`` ``[b, N, N]`` float32 in the same pixel order, ``weights`` optional
``[N, N]`` float32 detector weights (1 = measured, 0 = masked: such pixels add nothing to the misfit and
leave the modelled far field as it is). Misfits are float64 sums over all pixels of the batch.

* :class:`GaussianNoise`: amplitude least squares ``L = sum w (|Psi| - A)**2``. The square root of a
  Poisson count has a variance of about 1/4 whatever the dose, so this is also a good likelihood at low
  dose. Descent direction ``D = -dL/dPsi* = Psi (A / |Psi| - 1)`` (``psi + F^-1 D`` is the modulus
  projection).
* :class:`PoissonNoise`: ``L = sum w (|Psi|**2 - I log(|Psi|**2 + eps))`` with ``I = A**2``; direction
  ``D = Psi g`` with the gain ``g = (I / (|Psi|**2 + eps) - 1) / 2`` capped at :data:`POISSON_GAIN_MAX`,
  i.e. ``-(1/2) dL/dPsi*`` wherever the cap is inactive (equal to the Gaussian direction to first order
  near the solution). Uncapped, pixels where the model predicts almost nothing but photons were counted
  have an unbounded gain and swamp the update at low dose.

``eps`` is :data:`EPS_FRACTION` times the batch's mean count, so that it is negligible against any
count and scales with the dose. The misfit reported is the deviance of
:func:`ptychopinn.physics.losses.poisson_deviance` with this ``eps`` (the NLL minus its data-only value at
``|Psi|**2 = I``, zero for a perfect fit); the direction and line derivatives differentiate the same
function, so the ``eps`` there must be this one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ptychopinn.physics.losses import poisson_deviance

__all__ = ["EPS_FRACTION", "NOISE_MODELS", "POISSON_GAIN_MAX", "GaussianNoise", "NoiseModel", "PoissonNoise",
           "noise_model"]

POISSON_GAIN_MAX = 1.0
"""Cap on the Poisson gain ``(I / |Psi|**2 - 1) / 2``: one update at most doubles the modelled far field
at a pixel."""

EPS_FRACTION = 1e-6
"""``eps`` of the Poisson misfit as a fraction of the mean count of the batch."""

_TINY = 1e-30


def _abs2(z: torch.Tensor) -> torch.Tensor:
    """``|z|**2`` of complex ``z`` as float32, without the slow complex ``abs``."""
    sq = torch.view_as_real(z).square()
    return sq[..., 0] + sq[..., 1]


def _re_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re(conj(a) b)`` elementwise (float32) of two complex tensors of one shape."""
    prod = torch.view_as_real(a) * torch.view_as_real(b)
    return prod[..., 0] + prod[..., 1]


def _dot(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None = None) -> float:
    """``sum(a * b [* weights])`` over all elements of two float32 tensors of one shape, as a float."""
    if weights is not None:
        a = a * weights
    return float(torch.linalg.vecdot(a.reshape(-1), b.reshape(-1)))


def _intensity(far: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """``|Psi|**2`` ``[b, N, N]`` float32 of far fields ``[b, N, N]``, or of mixed-state far fields ``[b, K, N, N]``
    (the sum of the K incoherent modes' intensities)."""
    m2 = _abs2(far)
    return m2 if far.dim() == measured.dim() else m2.sum(dim=1)


def _per_mode(gain: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """``gain`` ``[b, N, N]`` shaped to multiply ``far`` (``[b, K, N, N]`` for mixed states: one gain for every
    mode, since the modes share the measured intensity)."""
    return gain if far.dim() == gain.dim() else gain.unsqueeze(1)


class NoiseModel(ABC):
    """Base class: a misfit of modelled far fields against measured amplitudes (module docstring)."""

    name = ""

    @abstractmethod
    def direction(self, far: torch.Tensor, measured: torch.Tensor,
                  weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D [b, N, N] complex64, misfit 0-d float64)``: the far-field descent direction at ``far``
        (zero at masked pixels) and the misfit there. Mixed states: ``far`` and ``D`` are ``[b, K, N, N]``,
        the model intensity the sum over the K modes."""

    @abstractmethod
    def pattern_misfit(self, far: torch.Tensor, measured: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
        """``[b]`` float32 misfit of each pattern of the batch (the terms :meth:`direction` sums; mixed-state
        ``far`` ``[b, K, N, N]`` as there)."""

    @abstractmethod
    def line_derivatives(self, far: torch.Tensor, dfar: torch.Tensor, t: float, measured: torch.Tensor,
                         weights: torch.Tensor | None = None) -> tuple[float, float]:
        """First and second derivative of ``t -> L(far + t dfar)`` at ``t`` (floats)."""

    @abstractmethod
    def line_slope(self, far: torch.Tensor, dfar: torch.Tensor, t: float, measured: torch.Tensor,
                   weights: torch.Tensor | None = None) -> float:
        """First derivative of ``t -> L(far + t dfar)`` at ``t`` alone (cheaper than :meth:`line_derivatives`)."""


class GaussianNoise(NoiseModel):
    """Amplitude least squares ``sum w (|Psi| - A)**2``."""

    name = "gaussian"

    def direction(self, far: torch.Tensor, measured: torch.Tensor,
                  weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mag = _intensity(far, measured).sqrt_()
        resid = mag - measured
        misfit = torch.tensor(_dot(resid, resid, weights), dtype=torch.float64)
        # where |Psi| = 0 the projection's phase is undefined; the far field is kept there
        gain = torch.div(measured, mag.clamp_min_(_TINY)).sub_(1.0)
        if weights is not None:
            gain.mul_(weights)
        return far * _per_mode(gain, far), misfit

    def pattern_misfit(self, far: torch.Tensor, measured: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
        resid = _intensity(far, measured).sqrt_().sub_(measured).square_()
        if weights is not None:
            resid = resid * weights
        return resid.sum(dim=(-2, -1))

    def line_derivatives(self, far: torch.Tensor, dfar: torch.Tensor, t: float, measured: torch.Tensor,
                         weights: torch.Tensor | None = None) -> tuple[float, float]:
        f = torch.add(far, dfar, alpha=t) if t else far
        mag = _abs2(f).sqrt_().clamp_min_(_TINY)
        slope = _re_dot(f, dfar).div_(mag)  # d|f|/dt
        resid = mag - measured
        curv = _abs2(dfar).sub_(slope.square()).div_(mag)  # d2|f|/dt2
        d1 = 2.0 * _dot(resid, slope, weights)
        d2 = 2.0 * (_dot(slope, slope, weights) + _dot(resid, curv, weights))
        return d1, d2

    def line_slope(self, far: torch.Tensor, dfar: torch.Tensor, t: float, measured: torch.Tensor,
                   weights: torch.Tensor | None = None) -> float:
        f = torch.add(far, dfar, alpha=t) if t else far
        mag = _abs2(f).sqrt_().clamp_min_(_TINY)
        return 2.0 * _dot(torch.div(measured, mag).neg_().add_(1.0), _re_dot(f, dfar), weights)


class PoissonNoise(NoiseModel):
    """Poisson negative log-likelihood of the counts ``sum w (|Psi|**2 - I log(|Psi|**2 + eps))``,
    reported as the deviance (zero for a perfect fit)."""

    name = "poisson"

    @staticmethod
    def _eps(counts: torch.Tensor) -> float:
        return EPS_FRACTION * float(counts.mean().clamp_min(1e-12))

    def direction(self, far: torch.Tensor, measured: torch.Tensor,
                  weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        counts = measured.square()
        m2 = _intensity(far, measured)  # |Psi|**2 without the square root
        eps = self._eps(counts)
        dev = poisson_deviance(m2, counts, eps)
        gain = torch.div(counts, m2 + eps).sub_(1.0).mul_(0.5).clamp_max_(POISSON_GAIN_MAX)
        if weights is not None:
            dev, gain = dev * weights, gain.mul_(weights)
        return far * _per_mode(gain, far), dev.sum(dtype=torch.float64)

    def pattern_misfit(self, far: torch.Tensor, measured: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
        counts = measured.square()
        m2 = _intensity(far, measured)
        dev = poisson_deviance(m2, counts, self._eps(counts))
        if weights is not None:
            dev = dev * weights
        return dev.sum(dim=(-2, -1))

    def line_derivatives(self, far: torch.Tensor, dfar: torch.Tensor, t: float, measured: torch.Tensor,
                         weights: torch.Tensor | None = None) -> tuple[float, float]:
        counts = measured.square()
        f = torch.add(far, dfar, alpha=t) if t else far
        m2 = _abs2(f).add_(self._eps(counts))
        dm2 = _re_dot(f, dfar).mul_(2.0)
        ratio = counts / m2
        keep = 1.0 - ratio
        d1 = _dot(dm2, keep, weights)
        d2 = 2.0 * _dot(_abs2(dfar), keep, weights) + _dot(ratio.mul_(dm2).div_(m2), dm2, weights)
        return d1, d2

    def line_slope(self, far: torch.Tensor, dfar: torch.Tensor, t: float, measured: torch.Tensor,
                   weights: torch.Tensor | None = None) -> float:
        counts = measured.square()
        f = torch.add(far, dfar, alpha=t) if t else far
        m2 = _abs2(f).add_(self._eps(counts))
        return 2.0 * _dot(_re_dot(f, dfar), torch.div(counts, m2).neg_().add_(1.0), weights)


NOISE_MODELS: dict[str, type[NoiseModel]] = {"gaussian": GaussianNoise, "poisson": PoissonNoise}


def noise_model(name: str) -> NoiseModel:
    """The noise model called ``name`` (``'gaussian'`` or ``'poisson'``)."""
    return NOISE_MODELS[name]()
