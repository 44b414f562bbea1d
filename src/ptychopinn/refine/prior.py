"""A proximal prior for refinement: where the data are weak (few counts per pixel), pull the object toward an
image, typically the network's, that already holds the sample's structure.

Objective: ``misfit(O) + mu * sum_covered |O - a Q|**2`` over the canvas pixels the scan covers (illumination
at least 10 % of its peak, as :attr:`~ptychopinn.refine.base.RefineResult.coverage`) where ``Q`` is non-zero.
``a`` is a complex number fitted to the current object before every pass, ``a = <Q, O> / <Q, Q>`` over those
pixels: the network's patches carry their own global phase and the network its own amplitude units, neither
of which the data fix for the refined object either.

``mu = prior_weight * mean(illumination over covered pixels)``: the data term's curvature at a pixel is about
its illumination ``sum_k |P_k|**2`` (in the units the object is scaled to, which explain the counts), so
``prior_weight`` is the prior's pull relative to the data at a typically lit pixel. In those units the
photon noise of a pixel's estimate scales as ``1 / counts`` while the prior's error does not: a fixed
``prior_weight`` matters at a few counts per pixel and not at all at 1e5.

How the engines apply it:

* rPIE passes (the rpie engine, the cg engine's warm-up): after each pass, the proximal step of the
  prior term for a preconditioned gradient step, ``O <- (O + t a Q) / (1 + t)`` with ``t = g mu / precond``,
  ``precond = (1 - alpha) illumination + alpha max`` and ``g`` the fraction of ``-dL/dO*`` the noise
  model's direction is (:func:`direction_fraction`);
* conjugate gradients: the term's gradient is added to each pass's direction and its (exact, quadratic)
  slope and curvature to the line search, ``a`` held for the pass.

:class:`SmoothingPrior` pulls toward a Gaussian-smoothed copy of the current object instead (a denoising step
that needs no network), to tell a gain from the network's image from one of any regularisation.
"""

from __future__ import annotations

import math

import torch

from ptychopinn.physics.noise import NoiseModel
from ptychopinn.physics.probe import gaussian_smooth

__all__ = ["Prior", "SmoothingPrior", "direction_fraction"]


def direction_fraction(noise: NoiseModel) -> float:
    """The fraction of ``-dL/dO*`` that ``noise``'s descent direction is: 1 for the Gaussian misfit, 1/2 for
    the Poisson deviance (its gain ``(I / |Psi|**2 - 1) / 2``, :mod:`ptychopinn.physics.noise`)."""
    return 0.5 if noise.name == "poisson" else 1.0


class Prior:
    """Pull toward a fixed image ``Q`` with its global complex scale fitted (module docstring).

    Args:
        image: ``[H * W]`` complex64 prior image on the refinement canvas (flattened), 0 where it has no value.
        covered: ``[H * W]`` bool, the pixels the prior acts on (covered by the scan, image non-zero).
        mu: weight of the term in the misfit's units per ``|O|**2`` (module docstring).
        step: ``[H * W]`` float32 ``g / precond``, the preconditioned gradient step of an rPIE pass.
    """

    def __init__(self, image: torch.Tensor, covered: torch.Tensor, mu: float, step: torch.Tensor) -> None:
        self.mask = covered.to(torch.float32)
        self.image = image * self.mask
        self.mu = float(mu)
        self.step = step
        self.scale = 1.0 + 0.0j  # the last fitted a

    def target(self, obj: torch.Tensor) -> torch.Tensor:
        """``a Q`` ``[H * W]`` complex64, ``a`` fitted to ``obj`` (flat canvas) over the covered pixels."""
        q = self.image
        den = float(q.real.square().sum() + q.imag.square().sum())
        a = complex(torch.vdot(q, obj)) / den if den > 0 else 0.0j
        if not (math.isfinite(a.real) and math.isfinite(a.imag)):
            a = 0.0j
        self.scale = a
        return q * a

    def residual(self, obj: torch.Tensor) -> torch.Tensor:
        """``mask * (O - a Q)`` ``[H * W]`` complex64 with ``a`` fitted now; ``mu`` times it is the term's
        ``dR/dO*``."""
        return self.mask * (obj - self.target(obj))

    def proximal(self, obj: torch.Tensor) -> None:
        """The term's proximal step on ``obj`` (flat canvas, in place): ``O <- (O + t a Q) / (1 + t)``."""
        t = self.step * self.mu
        obj.sub_(self.residual(obj) * (t / (1.0 + t)))

    def line_derivatives(self, residual: torch.Tensor, direction: torch.Tensor, t: float) -> tuple[float, float]:
        """Slope and curvature of ``t -> mu |residual + t mask d|**2`` (``a`` held) at ``t``."""
        md = self.mask * direction
        md2 = float(md.real.square().sum() + md.imag.square().sum())
        slope = 2.0 * self.mu * (float(torch.vdot(md, residual).real) + t * md2)
        return slope, 2.0 * self.mu * md2


class SmoothingPrior(Prior):
    """Pull toward the current object smoothed by a Gaussian of ``sigma`` pixels (no network image): the
    same proximal step, toward a target recomputed before every pass.

    Args:
        shape: ``(H, W)`` of the canvas; ``covered``, ``mu``, ``step`` as :class:`Prior`.
        sigma: standard deviation of the Gaussian in canvas pixels.
    """

    def __init__(self, shape: tuple[int, int], covered: torch.Tensor, mu: float, step: torch.Tensor,
                 sigma: float = 1.0) -> None:
        super().__init__(torch.zeros(covered.shape, dtype=torch.complex64, device=covered.device), covered, mu, step)
        self.shape = shape
        self.sigma = float(sigma)

    def target(self, obj: torch.Tensor) -> torch.Tensor:
        smooth = gaussian_smooth(obj.view(self.shape), self.sigma)
        return smooth.reshape(-1).to(torch.complex64) * self.mask
