"""The refinement engine: mini-batched, illumination-preconditioned updates (the rPIE / LSQML family).

Model. Pattern ``k`` is recorded with the probe centred on position ``r_k`` (object pixels, (x, y)).
:func:`~ptychopinn.physics.shift.split_positions` splits ``r_k`` into the integer corner ``c_k`` of an
``N x N`` object window and a fraction ``f_k``; the exit wave is ``psi_k = P_k * O[c_k + .]`` with the
probe moved by ``f_k`` in Fourier space (``P_k = fourier_shift(P, f_k)``), so the object is only ever
read and written at integer pixels (no interpolation blur). The far field is the orthonormal FFT
``Psi_k = F psi_k`` and the measurement is the amplitude ``A_k = sqrt(counts_k)``.

Misfits (summed over patterns and pixels):

* ``'gaussian'``: ``L = sum (|Psi| - A)**2``; exit-wave correction
  ``dpsi = F^-1(A Psi / |Psi|) - psi = -dL/dpsi*`` (the modulus projection);
* ``'poisson'``: ``L = sum (|Psi|**2 - I log(|Psi|**2 + eps))`` with ``I = A**2``; correction
  ``dpsi = F^-1(Psi g)`` with the gain ``g = (I / (|Psi|**2 + eps) - 1) / 2``, so ``dpsi = -(1/2) dL/dpsi*``,
  which equals the Gaussian correction to first order near the solution. The gain is capped at
  :data:`POISSON_GAIN_MAX` (one update at most doubles the modelled far field at a pixel): where the
  model predicts almost nothing but photons were counted, ``g`` is unbounded, and at low dose (a few
  counts per pixel) those pixels swamp the update (measured in the README).

Updates of one mini-batch (``dpsi`` from the current object and probe):

* object: ``O += step * sum_k place_k(conj(P_k) dpsi_k) / ((1 - alpha) sum_k place_k(|P_k|**2) + alpha
  max|P|**2)`` (rPIE; the numerator is ``-dL/dO*`` for the Gaussian misfit, half of it for Poisson
  wherever the gain cap is inactive);
* probe (optional): the same with the roles of object and probe swapped, the correction moved back by
  ``-f_k``; then the probe is rescaled to its initial energy, so the object/probe scale cannot drift;
* momentum (after each pass over all patterns): ``v = momentum * v + (O - O_prev)``, ``O += momentum * v``,
  with ``O_prev`` the object after the previous pass; the large-scale phase, which the local updates
  converge slowly, gets there in far fewer passes (measured in the README);
* positions (optional): the least-squares shift ``dr = Re<d_k, dpsi_k> / |d_k|**2`` per axis, with
  ``d_k = d psi_k / d r_k = -(dP_k/dx) O_k``, clipped to ``max_position_step`` pixels; the mean shift
  of an iteration is removed (a common translation is not observable); the step carries a gain
  (:data:`_POSITION_GAIN`) because the object absorbs part of each error.

Memory: the object, the probe, two canvas-sized accumulators and one batch of patterns, which are read
from ``scan.diffraction`` batch by batch (a memory-mapped scan is never loaded whole). The shifted
probes are cached for the whole scan when neither probe nor positions change and the cache fits
:data:`PROBE_CACHE_BYTES`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ptychopinn.config import RefineConfig
from ptychopinn.data.normalize import mean_pattern_energy
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.physics.shift import fourier_shift, shift_ramp, split_positions, window_index

__all__ = ["POISSON_GAIN_MAX", "PROBE_CACHE_BYTES", "Refiner", "RefineResult"]

PROBE_CACHE_BYTES = 256 * 2**20
_POSITION_MARGIN = 4  # canvas pixels kept around the windows when positions may move
# The single-pattern least-squares shift underestimates the error because the object has partly
# absorbed it; a gain of 5 recovered 2 px errors about 4x faster than 1 (RMS 0.2 px after 60
# iterations instead of 0.56) without oscillation in the measurements that set it.
_POSITION_GAIN = 5.0

POISSON_GAIN_MAX = 1.0
"""Cap on the Poisson exit-wave gain ``(I / |Psi|**2 - 1) / 2`` (module docstring). On the 1e4-photon
benchmark scans, 0.5, 1 and 2 gave the same quality within 0.02 SSIM; uncapped, the refinement ends at
amplitude / phase SSIM 0.19 / 0.33 instead of 0.60 / 0.77."""


@dataclass(eq=False)
class RefineResult:
    """A refined reconstruction.

    Attributes:
        obj: ``[H, W]`` complex64 object; canvas pixel ``(row, col)`` is object pixel
            ``(origin[1] + row, origin[0] + col)``.
        coverage: ``[H, W]`` float32 illumination ``sum_k |P_k|**2`` relative to its maximum, 0 where
            below 10 % (pixels the data barely constrain).
        origin: ``(x0, y0)`` integer object pixel of canvas pixel ``(0, 0)``.
        probe: ``[N, N]`` complex64 probe (refined or as given), in the units that explain the data.
        positions: ``[M, 2]`` float64 (x, y) object pixels (refined or as given).
        history: one entry per iteration: ``{'iteration', 'seconds', 'misfit'}``; ``misfit`` is the
            misfit of that pass divided by the total counts, ``seconds`` cumulative iteration time.
        scale: factor applied to the start object so that it explains the total counts (Parseval).
    """

    obj: np.ndarray
    coverage: np.ndarray
    origin: tuple[float, float]
    probe: np.ndarray
    positions: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    scale: float = 1.0

    @property
    def iterations(self) -> int:
        return len(self.history)

    @property
    def seconds(self) -> float:
        return float(self.history[-1]["seconds"]) if self.history else 0.0


class Refiner:
    """Holds the state of one refinement (object, probe, positions) and runs iterations.

    Args:
        scan: the scan (diffraction amplitudes, positions, probe); ``scan.obj`` is never read.
        config: :class:`~ptychopinn.config.RefineConfig`.
        start: optional ``[h, w]`` complex start object (e.g. the network's reconstruction) whose pixel
            ``(0, 0)`` is object pixel ``start_origin``; pixels it leaves at 0 are filled with its median
            covered amplitude. ``None`` starts from a flat object. Either way the start is scaled from the
            data alone so that it explains the measured total counts.
        start_origin: ``(x0, y0)`` object pixel of ``start[0, 0]``.
        device: overrides ``config.accelerator``.
    """

    def __init__(self, scan: ScanData, config: RefineConfig | None = None, *, start: np.ndarray | None = None,
                 start_origin: tuple[float, float] = (0.0, 0.0), device: str | torch.device | None = None) -> None:
        from ptychopinn.inference.predict import resolve_device

        self.config = cfg = config or RefineConfig()
        if not isinstance(cfg, RefineConfig):
            raise ConfigError(f"config: expected a RefineConfig, found {type(cfg).__name__}; build one with "
                              f"RefineConfig(...)")
        self.scan = scan
        self.device = resolve_device(cfg.accelerator if device is None else device)
        n = self.n = scan.N
        self.positions = np.array(scan.positions, dtype=np.float64, copy=True)
        corner, _ = split_positions(self.positions, n)
        margin = _POSITION_MARGIN if cfg.refine_positions else 0
        lo = corner.min(axis=0) - margin
        hi = corner.max(axis=0) + n + margin
        self.origin = (float(lo[0]), float(lo[1]))
        self._lo = lo
        self.shape = (int(hi[1] - lo[1]), int(hi[0] - lo[0]))
        probe = torch.from_numpy(np.asarray(scan.probe, dtype=np.complex64)).to(self.device)
        self.probe = probe
        self._probe_energy = float(probe.abs().square().sum())
        if not (math.isfinite(self._probe_energy) and self._probe_energy > 0):
            raise DataFormatError("probe: expected a probe with non-zero, finite energy, found all zeros or "
                                  "NaN/Inf; pass the probe of the scan")
        self.obj = self._start_object(start, start_origin)
        self._acc_num = torch.zeros(self.obj.numel(), dtype=torch.complex64, device=self.device)
        self._acc_den = torch.zeros(self.obj.numel(), dtype=torch.float32, device=self.device)
        self._rng = np.random.default_rng(cfg.seed)
        self._cache: torch.Tensor | None = None
        self._cache_intensity: torch.Tensor | None = None
        w = scan.pixel_weights()
        # masked detector pixels (0) keep the model's own far field and add nothing to the misfit
        self._weights = (None if w is None else
                         torch.fft.ifftshift(torch.from_numpy(w).to(self.device), dim=(-2, -1)))
        self._total_counts = mean_pattern_energy(scan.diffraction, weights=w) * scan.n_points
        self.history: list[dict[str, float]] = []
        self.scale = self._scale_to_data()
        self._prev = self.obj.clone() if cfg.momentum > 0 else None  # object after the previous pass
        self._velocity = torch.zeros_like(self.obj) if cfg.momentum > 0 else None

    # ------------------------------------------------------------------ set-up
    def _start_object(self, start: np.ndarray | None, start_origin: tuple[float, float]) -> torch.Tensor:
        h, w = self.shape
        if start is None:
            return torch.ones((h, w), dtype=torch.complex64, device=self.device)
        s = np.asarray(start)
        if s.ndim != 2 or not np.issubdtype(s.dtype, np.number):
            raise DataFormatError(f"start object: expected a 2-D [H, W] complex array, found {describe_array(s)}; "
                                  f"pass the 'obj' of a reconstruction")
        if not np.all(np.isfinite(s)):
            raise DataFormatError("start object: expected finite values, found NaN/Inf; reconstruct again or "
                                  "start from a flat object (--flat)")
        covered = np.abs(s) > 0
        if not covered.any():
            raise DataFormatError("start object: expected some non-zero pixels, found all zeros; start from a "
                                  "flat object (--flat)")
        fill = np.complex64(np.median(np.abs(s[covered])))
        canvas = np.full((h, w), fill, dtype=np.complex64)
        # paste the overlap of the start object's grid and this canvas (integer origins)
        ox, oy = int(round(start_origin[0])) - int(self._lo[0]), int(round(start_origin[1])) - int(self._lo[1])
        r0, c0 = max(0, oy), max(0, ox)
        r1, c1 = min(h, oy + s.shape[0]), min(w, ox + s.shape[1])
        if r1 <= r0 or c1 <= c0:
            raise DataFormatError(f"start object (origin {start_origin}, shape {s.shape}) does not overlap the "
                                  f"scanned region (origin {self.origin}, shape {self.shape}); pass a "
                                  f"reconstruction of this scan")
        part = s[r0 - oy:r1 - oy, c0 - ox:c1 - ox].astype(np.complex64)
        canvas[r0:r1, c0:c1] = np.where(np.abs(part) > 0, part, fill)
        return torch.from_numpy(canvas).to(self.device)

    def _scale_to_data(self) -> float:
        """Scale the object so that the model's total counts equal the measured total (Parseval)."""
        model_counts = 0.0
        for idx in self._batches(np.arange(self.scan.n_points)):
            psi = self._probes(idx) * self.obj.view(-1)[self._window_index(idx)]
            if self._weights is None:  # Parseval: the far field's counts without a transform
                model_counts += float(psi.abs().square().sum())
            else:
                model_counts += float((torch.fft.fft2(psi, norm="ortho").abs().square() * self._weights).sum())
        if not model_counts > 0:
            raise DataFormatError("start object: it explains no counts under the probe; start from a flat "
                                  "object (--flat)")
        if not self._total_counts > 0:
            raise DataFormatError("diffraction: all patterns are zero; nothing to refine")
        c = math.sqrt(self._total_counts / model_counts)
        self.obj.mul_(c)
        return c

    # ------------------------------------------------------------------ geometry helpers
    def _batches(self, order: np.ndarray) -> list[np.ndarray]:
        b = self.config.batch_size
        return [np.sort(order[i:i + b]) for i in range(0, order.size, b)]

    def _window_index(self, idx: np.ndarray) -> torch.Tensor:
        """Flat canvas indices ``[b, N, N]`` int64 of the integer windows of patterns ``idx``."""
        corner, _ = split_positions(self.positions[idx], self.n)
        corner = corner - self._lo
        h, w = self.shape
        corner[:, 0] = np.clip(corner[:, 0], 0, w - self.n)
        corner[:, 1] = np.clip(corner[:, 1], 0, h - self.n)
        return window_index(torch.from_numpy(corner).to(self.device), self.n, w)

    def _fractions(self, idx: np.ndarray) -> torch.Tensor:
        _, frac = split_positions(self.positions[idx], self.n)
        return torch.from_numpy(frac).to(self.device)

    def _probes(self, idx: np.ndarray) -> torch.Tensor:
        """Probes ``[b, N, N]`` complex64 moved by each pattern's fractional offset."""
        if self._cache is not None:
            return self._cache[torch.from_numpy(idx).to(self.device)]
        frac = self._fractions(idx)
        return torch.fft.ifft2(torch.fft.fft2(self.probe)[None] * shift_ramp((self.n, self.n), frac))

    def _intensities(self, idx: np.ndarray, probes: torch.Tensor) -> torch.Tensor:
        """``|P_k|**2`` ``[b, N, N]`` float32 (from the cache when the probes are cached)."""
        if self._cache_intensity is not None:
            return self._cache_intensity[torch.from_numpy(idx).to(self.device)]
        return probes.real.square() + probes.imag.square()

    def _fill_cache(self) -> None:
        cfg = self.config
        m, n = self.scan.n_points, self.n
        if cfg.refine_probe or cfg.refine_positions or m * n * n * 12 > PROBE_CACHE_BYTES:
            self._cache = self._cache_intensity = None
            return
        if self._cache is None:
            self._cache = torch.cat([self._probes(i) for i in self._batches(np.arange(m))])
            self._cache_intensity = self._cache.real.square() + self._cache.imag.square()

    # ------------------------------------------------------------------ iterations
    def _measured(self, idx: np.ndarray) -> torch.Tensor:
        """Measured amplitudes ``[b, N, N]`` float32 in unshifted FFT order (DC at pixel (0, 0))."""
        a = np.asarray(self.scan.diffraction[idx], dtype=np.float32)
        return torch.fft.ifftshift(torch.from_numpy(a).to(self.device), dim=(-2, -1))

    def exit_wave_correction(self, psi: torch.Tensor, measured: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dpsi [b, N, N] complex64, misfit 0-d float64)`` of exit waves ``psi`` against amplitudes
        ``measured`` (unshifted FFT order), for the configured noise model (module docstring)."""
        far = torch.fft.fft2(psi, norm="ortho")
        w = self._weights
        if self.config.noise == "gaussian":
            mag = far.abs()
            resid = (mag - measured).square()
            misfit = (resid if w is None else resid * w).sum(dtype=torch.float64)
            # where |Psi| = 0 the projection's phase is undefined; Psi = 0 is kept there
            ratio = measured / mag.clamp_min(1e-30)
            if w is not None:  # masked pixels: no measurement, the far field stays as modelled
                ratio = ratio * w + (1.0 - w)
            return torch.fft.ifft2(far * ratio, norm="ortho") - psi, misfit
        counts = measured.square()
        m2 = far.real.square() + far.imag.square()  # |Psi|**2 without the square root
        eps = 1e-6 * float(counts.mean().clamp_min(1e-12))
        m2_eps = m2 + eps
        dev = m2 - counts - counts * torch.log(m2_eps / (counts + eps))
        gain = (0.5 * (counts / m2_eps - 1.0)).clamp_max(POISSON_GAIN_MAX)
        if w is not None:
            dev, gain = dev * w, gain * w
        misfit = dev.sum(dtype=torch.float64)
        return torch.fft.ifft2(far * gain, norm="ortho"), misfit

    def iterate(self) -> float:
        """One pass over all patterns in seeded random mini-batches; returns the normalised misfit."""
        cfg = self.config
        it = len(self.history)
        do_probe = cfg.refine_probe and it >= cfg.probe_start
        do_pos = cfg.refine_positions and it >= cfg.position_start
        self._fill_cache()
        t0 = time.perf_counter()
        misfit = torch.zeros((), dtype=torch.float64, device=self.device)
        shifts = np.zeros_like(self.positions) if do_pos else None
        pmax = float(self.probe.abs().square().max())
        flat_obj = self.obj.view(-1)
        # Update the whole canvas at once when it is smaller than a batch of windows (cheaper than
        # gathering the accumulators back at every window pixel); large canvases take the gather path.
        dense = self.obj.numel() <= cfg.batch_size * self.n * self.n
        for idx in self._batches(self._rng.permutation(self.scan.n_points)):
            index = self._window_index(idx)
            flat = index.reshape(-1)
            probes = self._probes(idx)
            window = flat_obj[index]
            psi = probes * window
            dpsi, mis = self.exit_wave_correction(psi, self._measured(idx))
            misfit += mis
            self._acc_num.index_add_(0, flat, (probes.conj() * dpsi).reshape(-1))
            self._acc_den.index_add_(0, flat, self._intensities(idx, probes).reshape(-1))
            if dense:
                flat_obj.add_(self._acc_num / ((1.0 - cfg.alpha) * self._acc_den + cfg.alpha * pmax), alpha=cfg.step)
                self._acc_num.zero_()
                self._acc_den.zero_()
            else:
                den = (1.0 - cfg.alpha) * self._acc_den[flat] + cfg.alpha * pmax
                flat_obj[flat] = window.reshape(-1) + cfg.step * self._acc_num[flat] / den
                self._acc_num[flat] = 0
                self._acc_den[flat] = 0
            if do_probe:
                self._update_probe(idx, window, dpsi)
            if shifts is not None:
                shifts[idx] = self._position_shift(idx, probes, window, dpsi)
        if shifts is not None:
            shifts -= shifts.mean(axis=0, keepdims=True)
            self.positions += shifts
        self._accelerate()
        seconds = (self.history[-1]["seconds"] if self.history else 0.0) + time.perf_counter() - t0
        value = float(misfit) / max(self._total_counts, 1e-30)
        self.history.append({"iteration": it + 1, "seconds": seconds, "misfit": value})
        return value

    def _accelerate(self) -> None:
        """Heavy-ball step on the object over whole passes (module docstring)."""
        beta = self.config.momentum
        if beta <= 0:
            return
        if self._prev is None or self._velocity is None:
            return
        self._velocity.mul_(beta).add_(self.obj - self._prev)
        self.obj.add_(self._velocity, alpha=beta)
        self._prev.copy_(self.obj)

    def _update_probe(self, idx: np.ndarray, window: torch.Tensor, dpsi: torch.Tensor) -> None:
        frac = self._fractions(idx)
        num = fourier_shift(window.conj() * dpsi, -frac).sum(dim=0)
        den = window.abs().square().sum(dim=0)
        alpha = self.config.alpha
        self.probe = self.probe + num / ((1.0 - alpha) * den + alpha * den.max())
        self.probe = self.probe * math.sqrt(self._probe_energy / float(self.probe.abs().square().sum()))

    def _position_shift(self, idx: np.ndarray, probes: torch.Tensor, window: torch.Tensor,
                        dpsi: torch.Tensor) -> np.ndarray:
        """Least-squares position steps ``[b, 2]`` float64 (dx, dy) pixels, clipped."""
        n = self.n
        spec = torch.fft.fft2(probes)
        k = torch.fft.fftfreq(n, device=self.device, dtype=torch.float32) * (2j * math.pi)
        out = np.zeros((len(idx), 2))
        for axis, kk in ((0, k[None, None, :]), (1, k[None, :, None])):
            d = -torch.fft.ifft2(spec * kk) * window
            num = (d.conj() * dpsi).real.sum(dim=(-2, -1))
            den = d.abs().square().sum(dim=(-2, -1)).clamp_min(1e-12)
            out[:, axis] = (num / den).cpu().numpy()
        lim = self.config.max_position_step
        return np.clip(_POSITION_GAIN * out, -lim, lim)

    def run(self, *, progress: bool = False, callback: Callable[[Refiner], None] | None = None) -> RefineResult:
        """Iterate until ``config.iterations`` or ``config.time_limit``; returns the :class:`RefineResult`.

        ``callback(refiner)`` runs after each iteration (outside the timed part).
        """
        import sys

        from tqdm.auto import tqdm

        cfg = self.config
        with tqdm(total=cfg.iterations, desc="refine", unit="it", file=sys.stderr,
                  disable=None if progress else True, leave=False) as bar:
            for _ in range(cfg.iterations):
                value = self.iterate()
                bar.set_postfix(misfit=f"{value:.4g}")
                bar.update(1)
                if callback is not None:
                    callback(self)
                if cfg.time_limit is not None and self.history[-1]["seconds"] >= cfg.time_limit:
                    break
        return self.result()

    def illumination(self) -> np.ndarray:
        """``[H, W]`` float32 ``sum_k |P_k|**2`` over all scan positions, on the canvas."""
        acc = torch.zeros(self.obj.numel(), dtype=torch.float32, device=self.device)
        for idx in self._batches(np.arange(self.scan.n_points)):
            acc.index_add_(0, self._window_index(idx).reshape(-1), self._probes(idx).abs().square().reshape(-1))
        return acc.reshape(self.shape).cpu().numpy()

    def result(self) -> RefineResult:
        """The current state as a :class:`RefineResult` (copies)."""
        illum = self.illumination()
        cov = illum / max(float(illum.max()), 1e-30)
        cov[cov < 0.1] = 0.0
        return RefineResult(obj=self.obj.cpu().numpy().astype(np.complex64), coverage=cov.astype(np.float32),
                            origin=self.origin, probe=self.probe.cpu().numpy().astype(np.complex64),
                            positions=self.positions.copy(), history=[dict(h) for h in self.history],
                            scale=self.scale)
