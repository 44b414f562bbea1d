"""Whole-scan preconditioned conjugate gradients with exact step lengths (object only).

rPIE's mini-batches each normalise by their own illumination, so with data the pixel model cannot fit
exactly (photon noise, a real detector) they settle on a point that is not the misfit's minimum: on the
benchmark scans their misfit stays above the minimum's and the amplitude below what the data support.
This engine minimises the noise model's misfit over the whole scan:

1. ``config.warmup`` rPIE passes (:class:`~ptychopinn.refine.rpie.RPIE`) bring the large-scale
   structure in cheaply; with this engine's ``alpha`` (0.01 unless set) they step boldly into weakly lit
   pixels, a noisy image alone but a start from which the conjugate gradients converge in far fewer passes
   (README);
2. then each pass computes the descent direction of the whole scan, ``r = sum_k place_k(conj(P_k)
   F^-1 D_k)`` with ``D_k`` the noise model's far-field direction, preconditions it by the scan's
   illumination, ``z = r / ((1 - alpha) sum_k place_k(|P_k|**2) + alpha max)``, and moves along the
   Polak-Ribiere conjugate direction ``d = z + beta d_prev`` (``beta = max(0, <z, r - r_prev> /
   <z_prev, r_prev>)``, restarted whenever ``d`` is not a descent direction);
3. the step ``t`` minimises the misfit along ``d`` exactly: the far field is linear in the object, so
   ``Psi(O + t d) = Psi + t F(P d)``, and :data:`NEWTON_STEPS` Newton steps on ``t`` (first and second
   derivatives from :meth:`~ptychopinn.physics.noise.NoiseModel.line_derivatives`) need no transform
   beyond the one of ``P d``. A pass therefore costs two FFTs per pattern, as an rPIE pass does.

With ``prior_weight`` > 0 the prior term (:mod:`~ptychopinn.refine.prior`) adds its gradient to ``r`` and
its quadratic slope and curvature to the line search (its fitted scale held for the pass); the recorded misfit
stays the data's.

The far fields of all patterns are kept (:func:`cache_bytes`), and recomputed from the object every
:data:`REFRESH_EVERY` passes so that float32 round-off does not accumulate. Probe and positions stay
fixed: refine them with the rPIE engine.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from ptychopinn.errors import ConfigError
from ptychopinn.physics.fft import fft2u, ifft2u
from ptychopinn.refine.base import preconditioner
from ptychopinn.refine.prior import direction_fraction
from ptychopinn.refine.rpie import RPIE

__all__ = ["NEWTON_STEPS", "REFRESH_EVERY", "ConjugateGradient", "cache_bytes"]

NEWTON_STEPS = 2
"""Slope evaluations of the line search per pass: a Newton step from ``t = 0``, then secant steps."""

REFRESH_EVERY = 10
"""Passes between exact recomputations of the cached far fields."""

_MAX_STEP = 50.0


def cache_bytes(n_points: int, n: int) -> int:
    """Bytes the engine keeps for a scan of ``n_points`` ``n x n`` patterns: far fields and the far field
    of the search direction (complex64), measured amplitudes (float32), shifted probes and their
    intensities (complex64 + float32)."""
    return n_points * n * n * (8 + 8 + 4 + 12)


class ConjugateGradient(RPIE):
    """rPIE warm-up, then whole-scan preconditioned conjugate gradients (module docstring)."""

    engine = "cg"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        if self.refine_probe or cfg.refine_positions:
            raise ConfigError("engine: 'cg' refines the object only, found refine_probe or refine_positions set; "
                              "use engine 'rpie' (or 'auto', which picks it) to refine the probe or positions")
        if self.n_modes > 1:
            raise ConfigError(f"engine: 'cg' models a single probe mode, found {self.n_modes} probe modes; use engine "
                              "'rpie' (or 'auto', which picks it) for a mixed-state probe")
        self._chunks: list[np.ndarray] = []
        self._index: list[torch.Tensor] = []
        self._probe_chunks: list[torch.Tensor] = []
        self._meas: list[torch.Tensor] = []
        self._far: list[torch.Tensor] = []
        self._precond: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (r, z, d) of the last pass
        self._passes = 0
        self._prior_residual: torch.Tensor | None = None  # the prior term's residual of this pass
        self._direction: torch.Tensor | None = None  # this pass's search direction (the prior's line terms)
        self.last_step = 0.0  # step length t of the last conjugate-gradient pass

    def _first_checked_pass(self) -> int:
        return self.config.warmup  # the warm-up's misfit says nothing about the conjugate gradients

    def _prepare(self) -> None:
        self._fill_cache()
        self._chunks = self._batches(np.arange(self.scan.n_points))
        self._index = [self._window_index(c).reshape(-1) for c in self._chunks]
        self._probe_chunks = [self._probes(c) for c in self._chunks]
        self._meas = [self._measured(c) for c in self._chunks]
        self._cache = self._cache_intensity = None  # the chunks above hold the probes now
        illum = torch.zeros(self.obj.numel(), dtype=torch.float32, device=self.device)
        for index, probes in zip(self._index, self._probe_chunks, strict=True):
            illum.index_add_(0, index, (probes.real.square() + probes.imag.square()).reshape(-1))
        self._precond = preconditioner(illum, self.alpha)
        self._refresh()

    def _refresh(self) -> None:
        flat = self.obj.view(-1)
        self._far = [fft2u(p * flat[i].view(p.shape)) for i, p in zip(self._index, self._probe_chunks, strict=True)]

    def iterate(self) -> float:
        """One pass: an rPIE pass during the warm-up, a conjugate-gradient step after it."""
        if len(self.history) < self.config.warmup:
            return super().iterate()
        if self._precond is None:
            self._prepare()
        assert self._precond is not None
        it = len(self.history)
        t0 = time.perf_counter()
        w = self._weights
        r = torch.zeros(self.obj.numel(), dtype=torch.complex64, device=self.device)
        misfit = torch.zeros((), dtype=torch.float64, device=self.device)
        for index, probes, far, meas in zip(self._index, self._probe_chunks, self._far, self._meas, strict=True):
            direction, mis = self.noise.direction(far, meas, w)
            misfit += mis
            r.index_add_(0, index, (probes.conj() * ifft2u(direction)).reshape(-1))
        self._prior_residual = None
        if self.prior is not None:
            # the prior term's -dR/dO* = -mu residual, at the noise model's fraction of the misfit's gradient
            res = self._prior_residual = self.prior.residual(self.obj.view(-1))
            r.sub_(res, alpha=direction_fraction(self.noise) * self.prior.mu)
        z = r / self._precond
        d = z
        if self._last is not None:
            r_prev, z_prev, d_prev = self._last
            denom = float(torch.vdot(z_prev, r_prev).real)
            beta = max(0.0, float(torch.vdot(z, r - r_prev).real) / denom) if denom > 0 else 0.0
            d = z + beta * d_prev
            if float(torch.vdot(d, r).real) <= 0:  # not a descent direction: restart
                d = z
        flat = self.obj.view(-1)
        fd = [fft2u(p * d[i].view(p.shape)) for i, p in zip(self._index, self._probe_chunks, strict=True)]
        self._direction = d
        t = self.last_step = self._line_search(fd)
        flat.add_(d, alpha=t)
        for far, dfar in zip(self._far, fd, strict=True):
            far.add_(dfar, alpha=t)
        self._passes += 1
        if self._passes % REFRESH_EVERY == 0:
            self._refresh()
        self._last = (r, z, d) if t > 0 else None
        return self._record(it, t0, misfit)

    def _derivatives(self, fd: list[torch.Tensor]) -> tuple[float, float]:
        """Slope and curvature of the misfit along the search direction at ``t = 0``."""
        d1 = d2 = 0.0
        for far, dfar, meas in zip(self._far, fd, self._meas, strict=True):
            a, b = self.noise.line_derivatives(far, dfar, 0.0, meas, self._weights)
            d1 += a
            d2 += b
        if self.prior is not None and self._prior_residual is not None and self._direction is not None:
            a, b = self.prior.line_derivatives(self._prior_residual, self._direction, 0.0)
            d1 += a
            d2 += b
        return d1, d2

    def _slope(self, fd: list[torch.Tensor], t: float) -> float:
        slope = sum(self.noise.line_slope(far, dfar, t, meas, self._weights)
                    for far, dfar, meas in zip(self._far, fd, self._meas, strict=True))
        if self.prior is not None and self._prior_residual is not None and self._direction is not None:
            slope += self.prior.line_derivatives(self._prior_residual, self._direction, t)[0]
        return slope

    def _line_search(self, fd: list[torch.Tensor]) -> float:
        """Step ``t >= 0`` along the search direction (far fields ``fd``): a Newton step from ``t = 0`` (slope
        and curvature), then :data:`NEWTON_STEPS` - 1 safeguarded secant steps on the slope. The bracket
        ``[lo, hi]`` keeps ``slope(lo) < 0 < slope(hi)``; where the misfit is not convex (Poisson, far from
        the solution) the step grows until the slope turns."""
        s0, c0 = self._derivatives(fd)
        if not (math.isfinite(s0) and s0 < 0):
            return 0.0  # not a descent direction
        lo, s_lo, hi = 0.0, s0, math.inf
        t = -s0 / c0 if math.isfinite(c0) and c0 > 0 else max(self.last_step, 1.0)
        t = min(t, _MAX_STEP)
        for _ in range(NEWTON_STEPS - 1):
            s = self._slope(fd, t)
            if math.isfinite(s) and s < 0:
                if math.isfinite(hi):
                    lo, s_lo = t, s
                    t = 0.5 * (lo + hi)
                    continue
                # secant through (lo, s_lo) and (t, s): both below zero, extrapolate (at most 4x)
                step = t - s * (t - lo) / (s - s_lo) if s > s_lo else 2.0 * t
                lo, s_lo, t = t, s, min(max(step, t), 4.0 * t, _MAX_STEP)
            elif math.isfinite(s):
                hi = t
                t = t - s * (t - lo) / (s - s_lo) if s > s_lo else 0.5 * (lo + t)
                t = min(max(t, lo), hi)
            else:
                hi = t
                t = 0.5 * (lo + hi)
        return t
