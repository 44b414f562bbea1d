"""rPIE: mini-batched, illumination-preconditioned updates of object, probe and positions.

Updates of one mini-batch (``dpsi`` = the noise model's exit-wave descent direction from the current
object and probe, :mod:`ptychopinn.refine.base`):

* object: ``O += step * sum_k place_k(conj(P_k) dpsi_k) / ((1 - alpha) sum_k place_k(|P_k|**2) + alpha
  max|P|**2)`` (the numerator is ``-dL/dO*`` for the Gaussian misfit, half of it for Poisson wherever
  the gain cap is inactive);
* probe (optional): the same with the roles of object and probe swapped, the correction moved back by
  ``-f_k``; then the probe is rescaled to its initial energy, so the object/probe scale cannot drift;
  a mixed-state probe (K modes, :mod:`ptychopinn.refine.modes`) updates every mode from its own exit-wave
  correction with the same preconditioner and is orthogonalised after each pass;
* prior (with ``prior_weight`` > 0): after each pass the proximal step toward the prior image
  (:mod:`ptychopinn.refine.prior`);
* momentum (after each pass over all patterns): ``v = momentum * v + (O - O_prev)``, ``O += momentum * v``,
  with ``O_prev`` the object after the previous pass; the large-scale phase, which the local updates
  converge slowly, gets there in far fewer passes;
* positions (optional): a coarse-to-fine search of whole-pixel offsets by misfit on a schedule
  (:mod:`ptychopinn.refine.positions`), and every pass the least-squares shift
  ``dr = Re<d_k, dpsi_k> / |d_k|**2`` per axis, with
  ``d_k = d psi_k / d r_k = -(dP_k/dx) O_k``, clipped to ``max_position_step`` pixels; the step carries a
  gain (:data:`POSITION_GAIN`) because the object absorbs part of each error. After each pass the affine
  part of the correction is removed (:func:`~ptychopinn.refine.positions.remove_affine`: a common
  translation is not observable, a common scale, rotation or shear barely), and while positions are
  refined each pattern's object update is weighted down when it fits worse than the median
  (:func:`~ptychopinn.refine.positions.pattern_weights`).

Each mini-batch is normalised by its own illumination, which makes the first passes fast, but with data
the model cannot fit exactly (noise, a detector that does not follow the pixel model) the passes settle
on a point that is not the misfit's minimum; :mod:`ptychopinn.refine.cg` finishes from there.

Memory: the object, the probe, two canvas-sized accumulators and one batch of patterns, which are read
from ``scan.diffraction`` batch by batch (a memory-mapped scan is never loaded whole).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from ptychopinn.physics.fft import fft2u, ifft2u
from ptychopinn.physics.shift import fourier_derivatives, fourier_shift
from ptychopinn.refine.base import Reconstructor
from ptychopinn.refine.modes import orthogonalise
from ptychopinn.refine.positions import PositionSearch, pattern_weights, position_errors, remove_affine

__all__ = ["POSITION_GAIN", "RPIE"]

# The single-pattern least-squares shift underestimates the error because the object has partly
# absorbed it; a gain of 5 recovered 2 px errors about 4x faster than 1 (RMS 0.2 px after 60
# iterations instead of 0.56) without oscillation in the measurements that set it.
POSITION_GAIN = 5.0


class RPIE(Reconstructor):
    """Mini-batch rPIE with momentum, optional probe and position refinement (module docstring)."""

    engine = "rpie"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acc_num = torch.zeros(self.obj.numel(), dtype=torch.complex64, device=self.device)
        self._acc_den = torch.zeros(self.obj.numel(), dtype=torch.float32, device=self.device)
        momentum = self.config.momentum > 0
        self._prev = self.obj.clone() if momentum else None  # object after the previous pass
        self._velocity = torch.zeros_like(self.obj) if momentum else None
        self._search = PositionSearch(self.config.position_start, self.search_radius)
        # misfit over counts of each pattern in its latest pass (position correction weights the object update)
        self._fit = np.full(self.scan.n_points, np.nan) if self.config.refine_positions else None

    def iterate(self) -> float:
        """One pass over all patterns in seeded random mini-batches; returns the normalised misfit."""
        cfg = self.config
        it = len(self.history)
        do_probe = self.refine_probe and it >= cfg.probe_start
        do_pos = cfg.refine_positions and it >= cfg.position_start
        self._fill_cache()
        t0 = time.perf_counter()
        if do_pos:
            moves = self._search.run(self, it)
            if moves is not None:
                self.positions += moves
        misfit = torch.zeros((), dtype=torch.float64, device=self.device)
        shifts = np.zeros_like(self.positions) if do_pos else None
        power = self.probe.abs().square()
        pmax = float((power.sum(dim=0) if power.dim() == 3 else power).max())
        flat_obj = self.obj.view(-1)
        # Update the whole canvas at once when it is smaller than a batch of windows (cheaper than
        # gathering the accumulators back at every window pixel); large canvases take the gather path.
        dense = self.obj.numel() <= cfg.batch_size * self.n * self.n
        for idx in self._batches(self._rng.permutation(self.scan.n_points)):
            index = self._window_index(idx)
            flat = index.reshape(-1)
            probes = self._probes(idx)
            window = flat_obj[index]
            if self._fit is None:
                dpsi, mis = self.exit_wave_correction(self._exit(probes, window), self._measured(idx))
                misfit += mis
                num = probes.conj() * dpsi
                self._acc_num.index_add_(0, flat, (num.sum(dim=1) if num.dim() == 4 else num).reshape(-1))
                self._acc_den.index_add_(0, flat, self._intensities(idx, probes).reshape(-1))
            else:
                dpsi, mis, wk = self._weighted_correction(idx, probes * window)
                misfit += mis
                self._acc_num.index_add_(0, flat, (wk * probes.conj() * dpsi).reshape(-1))
                self._acc_den.index_add_(0, flat, (wk * self._intensities(idx, probes)).reshape(-1))
            if dense:
                flat_obj.add_(self._acc_num / ((1.0 - self.alpha) * self._acc_den + self.alpha * pmax), alpha=cfg.step)
                self._acc_num.zero_()
                self._acc_den.zero_()
            else:
                den = (1.0 - self.alpha) * self._acc_den[flat] + self.alpha * pmax
                flat_obj[flat] = window.reshape(-1) + cfg.step * self._acc_num[flat] / den
                self._acc_num[flat] = 0
                self._acc_den[flat] = 0
            if do_probe:
                self._update_probe(idx, window, dpsi)
            if shifts is not None:
                shifts[idx] = self._position_shift(probes, window, dpsi)
        if shifts is not None:
            self.positions = remove_affine(self.positions + shifts, self.start_positions)
        if do_probe and self.probe.dim() == 3:
            self.probe = orthogonalise(self.probe)
        if self.prior is not None:
            self.prior.proximal(flat_obj)
        self._accelerate()
        value = self._record(it, t0, misfit)
        if cfg.refine_positions:
            rms, median = position_errors(self.positions, self.start_positions)
            self.history[-1].update(position_change_rms=rms, position_change_median=median)
        return value

    def _weighted_correction(self, idx: np.ndarray,
                             psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`exit_wave_correction` plus each pattern's object-update weight ``[b, 1, 1]`` float32
        (:func:`~ptychopinn.refine.positions.pattern_weights`), from its misfit over counts in this pass
        relative to the scan's median (the latest pass of each pattern)."""
        measured = self._measured(idx)
        far = fft2u(psi)
        direction, mis = self.noise.direction(far, measured, self._weights)
        per = self.noise.pattern_misfit(far, measured, self._weights)
        counts = measured.square().sum(dim=(-2, -1)).clamp_min(1e-30)
        assert self._fit is not None
        self._fit[idx] = (per / counts).double().cpu().numpy()
        w = pattern_weights(self._fit[idx] / np.nanmedian(self._fit))
        return ifft2u(direction), mis, torch.from_numpy(w).to(self.device).view(-1, 1, 1)

    def _accelerate(self) -> None:
        """Heavy-ball step on the object over whole passes (module docstring)."""
        beta = self.config.momentum
        if beta <= 0 or self._prev is None or self._velocity is None:
            return
        self._velocity.mul_(beta).add_(self.obj - self._prev)
        self.obj.add_(self._velocity, alpha=beta)
        self._prev.copy_(self.obj)

    def _update_probe(self, idx: np.ndarray, window: torch.Tensor, dpsi: torch.Tensor) -> None:
        """rPIE step of the probe (every mode of a mixed state, one shared preconditioner), energy kept."""
        frac = self._fractions(idx)
        if dpsi.dim() == 4:  # [b, K, N, N]: shift each pattern's K corrections back by its own offset
            b, k, n = int(dpsi.shape[0]), int(dpsi.shape[1]), self.n
            moved = fourier_shift((window.conj().unsqueeze(1) * dpsi).reshape(b * k, n, n),
                                  -frac.repeat_interleave(k, dim=0))
            num = moved.reshape(b, k, n, n).sum(dim=0)
        else:
            num = fourier_shift(window.conj() * dpsi, -frac).sum(dim=0)
        den = window.abs().square().sum(dim=0)
        alpha = self.alpha
        self.probe = self.probe + num / ((1.0 - alpha) * den + alpha * den.max())
        self.probe = self.probe * math.sqrt(self._probe_energy / float(self.probe.abs().square().sum()))

    def _position_shift(self, probes: torch.Tensor, window: torch.Tensor, dpsi: torch.Tensor) -> np.ndarray:
        """Least-squares position steps ``[b, 2]`` float64 (dx, dy) pixels, clipped."""
        out = np.zeros((int(probes.shape[0]), 2))
        for axis, deriv in enumerate(fourier_derivatives(probes)):
            d = -deriv * window
            num = (d.conj() * dpsi).real.sum(dim=(-2, -1))
            den = d.abs().square().sum(dim=(-2, -1)).clamp_min(1e-12)
            out[:, axis] = (num / den).cpu().numpy()
        lim = self.config.max_position_step
        return np.clip(POSITION_GAIN * out, -lim, lim)
