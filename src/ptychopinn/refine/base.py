"""What every refinement engine shares: the model, the object canvas, the start, the stopping rule.

Model. Pattern ``k`` is recorded with the probe centred on position ``r_k`` (object pixels, (x, y)).
:func:`~ptychopinn.physics.shift.split_positions` splits ``r_k`` into the integer corner ``c_k`` of an
``N x N`` object window and a fraction ``f_k``; the exit wave is ``psi_k = P_k * O[c_k + .]`` with the
probe moved by ``f_k`` in Fourier space (``P_k = shifted_copies(P, f_k)``), so the object is only ever
read and written at integer pixels (no interpolation blur). The far field is the orthonormal FFT in
unshifted order (:func:`~ptychopinn.physics.fft.fft2u`) and the measurement the amplitude
``A_k = sqrt(counts_k)``; the misfit and its descent direction come from a
:class:`~ptychopinn.physics.noise.NoiseModel`.

The engines (:mod:`~ptychopinn.refine.rpie`, :mod:`~ptychopinn.refine.cg`) subclass
:class:`Reconstructor` and implement :meth:`Reconstructor.iterate` (one pass over all
patterns).

Stopping rule (:meth:`Reconstructor.run`): the run ends at ``config.iterations`` (the cap), at
``config.time_limit``, or, with ``config.tolerance`` set, once the misfit has changed by less than
``tolerance`` (relative) in each of the last :data:`TOLERANCE_WINDOW` iterations and has not risen over
them. A rising or oscillating misfit is never taken for convergence. :attr:`RefineResult.stop_reason`
says which one ended the run.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ptychopinn.config import RefineConfig
from ptychopinn.data.normalize import mean_pattern_energy, transmission_level
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.physics.fft import fft2u, ifft2u, to_unshifted
from ptychopinn.physics.noise import NoiseModel, noise_model
from ptychopinn.physics.shift import shifted_copies, split_positions, window_index
from ptychopinn.refine.prior import Prior
from ptychopinn.runtime import resolve_device

__all__ = ["PROBE_CACHE_BYTES", "TOLERANCE_WINDOW", "Reconstructor", "RefineResult", "preconditioner"]

PROBE_CACHE_BYTES = 256 * 2**20
"""The shifted probes of the whole scan are kept when neither probe nor positions change and they fit."""

TOLERANCE_WINDOW = 5
"""Iterations over which the stopping rule averages the misfit's relative improvement."""

_POSITION_MARGIN = 4  # canvas pixels kept around the windows when positions may move
_START_RANGE = (1e-6, 1e6)  # start objects peaking outside this range are divided by their peak first


@dataclass(eq=False)
class RefineResult:
    """A refined reconstruction.

    Attributes:
        obj: ``[H, W]`` complex64 object; canvas pixel ``(row, col)`` is object pixel
            ``(origin[1] + row, origin[0] + col)``.
        coverage: ``[H, W]`` float32 illumination ``sum_k |P_k|**2`` relative to its maximum, 0 where
            below 10 % (pixels the data barely constrain).
        origin: ``(x0, y0)`` integer object pixel of canvas pixel ``(0, 0)``.
        probe: ``[N, N]`` complex64 probe (refined or as given), in the units that explain the data; the
            strongest mode of a mixed state.
        probe_modes: ``[K, N, N]`` complex64 modes of a mixed-state probe (K >= 2, strongest first, orthogonal
            when refined), or None for one mode.
        probe_refined: whether the probe was refined (it differs from the scan's by more than ``transmission``).
        positions: ``[M, 2]`` float64 (x, y) object pixels (refined or as given).
        history: one entry per iteration: ``{'iteration', 'seconds', 'misfit'}``; ``misfit`` is the
            misfit of that pass divided by the total counts, ``seconds`` cumulative iteration time; with
            position refinement also ``position_change_rms`` and ``position_change_median``, how far (pixels)
            the positions have moved from the given ones (common translation removed).
        scale: factor applied to the caller's start object so that it explains the total counts (Parseval).
        transmission: the free-space level of the refined object in the units that explain the data with the
            probe as given (:func:`~ptychopinn.data.normalize.transmission_level`); ``obj`` has been divided by it
            and ``probe`` multiplied by it (the model of the data is unchanged), so ``obj`` is about 1 where
            the sample is empty. ``obj * transmission / scale`` is in the caller's start object's units.
        notes: what the refinement decided by itself (probe start and refinement, position search), for logs
            and metadata: ``{'probe': str, 'probe_search': {...}, 'positions': str}`` as applicable.
        engine: the engine that ran (``'rpie'`` or ``'cg'``), ``noise`` the misfit it minimised and ``alpha`` its
            preconditioner regularisation.
        stop_reason: why the run ended (``'converged'``, ``'iteration cap'``, ``'time limit'``), or ``''``
            for a state taken before :meth:`Reconstructor.run` finished.
    """

    obj: np.ndarray
    coverage: np.ndarray
    origin: tuple[float, float]
    probe: np.ndarray
    positions: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    scale: float = 1.0
    engine: str = ""
    noise: str = ""
    alpha: float = 0.0
    stop_reason: str = ""
    transmission: float = 1.0
    probe_modes: np.ndarray | None = None
    probe_refined: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        return len(self.history)

    @property
    def seconds(self) -> float:
        return float(self.history[-1]["seconds"]) if self.history else 0.0


class Reconstructor(ABC):
    """State of one refinement (object, probe, positions) and the loop that runs an engine's passes.

    Args:
        scan: the scan (diffraction amplitudes, positions, probe); ``scan.obj`` is never read.
        config: :class:`~ptychopinn.config.RefineConfig`.
        start: optional ``[h, w]`` complex start object (e.g. the network's reconstruction) whose pixel
            ``(0, 0)`` is object pixel ``start_origin``; pixels it leaves at 0 are filled with its median
            covered amplitude. ``None`` starts from a flat object. Either way the start is scaled from the
            data alone so that it explains the measured total counts.
        start_origin: ``(x0, y0)`` object pixel of ``start[0, 0]``.
        prior: optional ``[h, w]`` complex image the object is pulled toward with ``config.prior_weight``
            (:mod:`~ptychopinn.refine.prior`), e.g. the network's; None with a weight > 0 uses ``start``.
        prior_origin: ``(x0, y0)`` object pixel of ``prior[0, 0]``; None: ``start_origin``, and then a prior
            must have the start's shape (the same canvas).
        device: overrides ``config.accelerator``.
    """

    engine = ""

    def __init__(self, scan: ScanData, config: RefineConfig | None = None, *, start: np.ndarray | None = None,
                 start_origin: tuple[float, float] = (0.0, 0.0), prior: np.ndarray | None = None,
                 prior_origin: tuple[float, float] | None = None,
                 device: str | torch.device | None = None) -> None:
        self.config = cfg = config or RefineConfig()
        if not isinstance(cfg, RefineConfig):
            raise ConfigError(f"config: expected a RefineConfig, found {type(cfg).__name__}; build one with "
                              f"RefineConfig(...)")
        self.scan = scan
        self.device = resolve_device(cfg.accelerator if device is None else device)
        self.noise: NoiseModel = noise_model(cfg.resolved_noise(self.engine))
        self.alpha = cfg.resolved_alpha(self.engine)
        # 'auto' is decided before an engine is built (ptychopinn.refine.probe_choice); an engine made
        # directly with 'auto' keeps the probe fixed
        self.refine_probe = cfg.refine_probe is True
        self.notes: dict[str, Any] = {}
        n = self.n = scan.N
        self.positions = np.array(scan.positions, dtype=np.float64, copy=True)
        self.start_positions = self.positions.copy()
        self.search_radius = 0
        if cfg.refine_positions:
            radius = n // 2 if cfg.position_search_radius is None else cfg.position_search_radius
            self.search_radius = int(radius)
        corner, _ = split_positions(self.positions, n)
        margin = _POSITION_MARGIN + self.search_radius if cfg.refine_positions else 0
        lo = corner.min(axis=0) - margin
        hi = corner.max(axis=0) + n + margin
        self.origin = (float(lo[0]), float(lo[1]))
        self._lo = lo
        self.shape = (int(hi[1] - lo[1]), int(hi[0] - lo[0]))
        from ptychopinn.refine.modes import initial_modes, resolve_modes

        self.n_modes = resolve_modes(scan, cfg.probe_modes)
        # [N, N] for one mode, [K, N, N] for a mixed state
        probe = torch.from_numpy(initial_modes(scan, self.n_modes)).to(self.device)
        self.probe = probe
        self._probe_energy = float(probe.abs().square().sum())
        if not (math.isfinite(self._probe_energy) and self._probe_energy > 0):
            raise DataFormatError("probe: expected a probe with non-zero, finite energy, found all zeros or "
                                  "NaN/Inf; pass the probe of the scan")
        self._start_peak = 1.0
        self.obj = self._start_object(start, start_origin)
        self._rng = np.random.default_rng(cfg.seed)
        self._cache: torch.Tensor | None = None
        self._cache_intensity: torch.Tensor | None = None
        w = scan.pixel_weights()
        # masked detector pixels (0) keep the model's own far field and add nothing to the misfit
        self._weights = None if w is None else to_unshifted(torch.from_numpy(w).to(self.device))
        self._total_counts = mean_pattern_energy(scan.diffraction, weights=w) * scan.n_points
        self.history: list[dict[str, float]] = []
        self.stop_reason = ""
        self.scale = self._scale_to_data()
        self.prior: Prior | None = None
        if cfg.prior_weight > 0:
            self.prior = self._make_prior(start if prior is None else prior, start_origin, prior_origin,
                                          None if start is None or prior is None else start.shape)

    # ------------------------------------------------------------------ set-up
    def _start_object(self, start: np.ndarray | None, start_origin: tuple[float, float]) -> torch.Tensor:
        if start is None:
            return torch.ones(self.shape, dtype=torch.complex64, device=self.device)
        s = np.asarray(start)
        if s.ndim != 2 or not np.issubdtype(s.dtype, np.number):
            raise DataFormatError(f"start object: expected a 2-D [H, W] complex array, found {describe_array(s)}; "
                                  f"pass the 'obj' of a reconstruction")
        if not np.all(np.isfinite(s)):
            raise DataFormatError("start object: expected finite values, found NaN/Inf; reconstruct again or "
                                  "start from a flat object (--flat)")
        peak = float(np.max(np.abs(s.astype(np.complex128))))
        if peak > 0 and not _START_RANGE[0] <= peak <= _START_RANGE[1]:
            # squaring amplitudes of 1e30 (or 1e-30) in float32 overflows (underflows); the start is scaled to
            # the measured counts anyway, so only its shape matters here
            s, self._start_peak = s.astype(np.complex128) / peak, peak
        covered = np.abs(s) > 0
        if not covered.any():
            raise DataFormatError("start object: expected some non-zero pixels, found all zeros; start from a "
                                  "flat object (--flat)")
        fill = np.complex64(np.median(np.abs(s[covered])))
        canvas = self._on_canvas(s, start_origin, "start object")
        return torch.from_numpy(np.where(np.abs(canvas) > 0, canvas, fill)).to(self.device)

    def _on_canvas(self, image: np.ndarray, origin: tuple[float, float], what: str) -> np.ndarray:
        """``[H, W]`` complex64: the overlap of ``image`` (pixel ``(0, 0)`` at object pixel ``origin``, integer)
        pasted on this canvas, 0 elsewhere."""
        h, w = self.shape
        canvas = np.zeros((h, w), dtype=np.complex64)
        ox, oy = int(round(origin[0])) - int(self._lo[0]), int(round(origin[1])) - int(self._lo[1])
        r0, c0 = max(0, oy), max(0, ox)
        r1, c1 = min(h, oy + image.shape[0]), min(w, ox + image.shape[1])
        if r1 <= r0 or c1 <= c0:
            raise DataFormatError(f"{what} (origin {origin}, shape {image.shape}) does not overlap the "
                                  f"scanned region (origin {self.origin}, shape {self.shape}); pass a "
                                  f"reconstruction of this scan")
        canvas[r0:r1, c0:c1] = image[r0 - oy:r1 - oy, c0 - ox:c1 - ox].astype(np.complex64)
        return canvas

    def _make_prior(self, image: np.ndarray | None, start_origin: tuple[float, float],
                    prior_origin: tuple[float, float] | None, start_shape: tuple[int, ...] | None) -> Prior:
        """The :class:`~ptychopinn.refine.prior.Prior` of ``image`` on this canvas with ``config.prior_weight``."""
        if image is None:
            raise ConfigError(f"prior_weight: {self.config.prior_weight} needs a prior image, found none (no prior "
                              f"and no start); pass prior=... (the network's image) or set prior_weight=0")
        q = np.asarray(image)
        if q.ndim != 2 or not np.issubdtype(q.dtype, np.number):
            raise DataFormatError(f"prior: expected a 2-D [H, W] complex array, found {describe_array(q)}; pass the "
                                  f"'obj' of a reconstruction")
        if prior_origin is None and start_shape is not None and q.shape != tuple(start_shape):
            raise DataFormatError(f"prior: expected the start's shape {tuple(start_shape)} (the same canvas), found "
                                  f"{q.shape}; pass the network's image of this scan or its prior_origin")
        if not np.all(np.isfinite(q)):
            raise DataFormatError("prior: expected finite values, found NaN/Inf; reconstruct again")
        peak = float(np.max(np.abs(q)))
        if peak > 0:  # only the prior's shape matters (its scale is fitted), and float32 must hold its square
            q = q.astype(np.complex128) / peak
        canvas = self._on_canvas(q, start_origin if prior_origin is None else prior_origin, "prior")
        self._fill_cache()
        illum = self._illumination()
        covered = (illum >= 0.1 * illum.max()) & torch.from_numpy(np.abs(canvas) > 0).to(self.device).view(-1)
        if not bool(covered.any()):
            raise DataFormatError("prior: expected non-zero values on the scanned region, found none; pass a "
                                  "reconstruction of this scan")
        from ptychopinn.refine.prior import direction_fraction

        step = direction_fraction(self.noise) / preconditioner(illum, self.alpha)
        mu = self.config.prior_weight * float(illum[covered].mean())
        return Prior(torch.from_numpy(canvas).to(self.device).view(-1), covered, mu, step)

    def _scale_to_data(self) -> float:
        """Scale the object so that the model's total counts equal the measured total (Parseval)."""
        model_counts = 0.0
        for idx in self._batches(np.arange(self.scan.n_points)):
            psi = self._exit(self._probes(idx), self.obj.view(-1)[self._window_index(idx)])
            if self._weights is None:  # Parseval: the far field's counts without a transform
                model_counts += float(psi.abs().square().sum())
            else:
                model_counts += float((fft2u(psi).abs().square() * self._weights).sum())
        if not (math.isfinite(model_counts) and model_counts > 0):
            raise DataFormatError("start object: it explains no counts under the probe (or its values "
                                  "overflow); start from a flat object (--flat)")
        if not self._total_counts > 0:
            raise DataFormatError("diffraction: all patterns are zero; nothing to refine")
        c = math.sqrt(self._total_counts / model_counts)
        self.obj.mul_(c)
        return c / self._start_peak

    # ------------------------------------------------------------------ geometry helpers
    def _batches(self, order: np.ndarray, size: int | None = None) -> list[np.ndarray]:
        b = size or self.config.batch_size
        return [np.sort(order[i:i + b]) for i in range(0, order.size, b)]

    def _window_index(self, idx: np.ndarray) -> torch.Tensor:
        """Flat canvas indices ``[b, N, N]`` int64 of the integer windows of patterns ``idx``."""
        return self._windows_at(self.positions[idx])

    def _windows_at(self, positions: np.ndarray) -> torch.Tensor:
        """Flat canvas indices ``[b, N, N]`` int64 of the integer windows at ``positions`` ``[b, 2]`` (x, y)
        object pixels, clamped to the canvas."""
        corner, _ = split_positions(positions, self.n)
        corner = corner - self._lo
        h, w = self.shape
        corner[:, 0] = np.clip(corner[:, 0], 0, w - self.n)
        corner[:, 1] = np.clip(corner[:, 1], 0, h - self.n)
        return window_index(torch.from_numpy(corner).to(self.device), self.n, w)

    def _fractions(self, idx: np.ndarray) -> torch.Tensor:
        _, frac = split_positions(self.positions[idx], self.n)
        return torch.from_numpy(frac).to(self.device)

    def _probes(self, idx: np.ndarray) -> torch.Tensor:
        """Probes ``[b, N, N]`` complex64 moved by each pattern's fractional offset (``[b, K, N, N]`` for a
        mixed state)."""
        if self._cache is not None:
            return self._cache[torch.from_numpy(idx).to(self.device)]
        return self._shifted_probes(self._fractions(idx))

    def _shifted_probes(self, frac: torch.Tensor) -> torch.Tensor:
        """The probe (every mode) moved by each of ``frac`` ``[b, 2]`` (dx, dy) pixels."""
        if self.probe.dim() == 3:
            return torch.stack([shifted_copies(mode, frac) for mode in self.probe], dim=1)
        return shifted_copies(self.probe, frac)

    @staticmethod
    def _exit(probes: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Exit waves ``probes * windows`` (``[b, N, N]``, or ``[b, K, N, N]`` for mixed-state probes, every
        mode under the same object window)."""
        return probes * (windows if probes.dim() == windows.dim() else windows.unsqueeze(1))

    def _intensities(self, idx: np.ndarray, probes: torch.Tensor) -> torch.Tensor:
        """``|P_k|**2`` ``[b, N, N]`` float32, summed over the modes of a mixed state (from the cache when the
        probes are cached)."""
        if self._cache_intensity is not None:
            return self._cache_intensity[torch.from_numpy(idx).to(self.device)]
        return _mode_sum(probes.real.square() + probes.imag.square(), probes)

    def _fill_cache(self) -> None:
        cfg = self.config
        m, n = self.scan.n_points, self.n
        if self.refine_probe or cfg.refine_positions or m * n * n * 12 * self.n_modes > PROBE_CACHE_BYTES:
            self._cache = self._cache_intensity = None
            return
        if self._cache is None:
            self._cache = torch.cat([self._probes(i) for i in self._batches(np.arange(m))])
            self._cache_intensity = _mode_sum(self._cache.real.square() + self._cache.imag.square(), self._cache)

    def _measured(self, idx: np.ndarray) -> torch.Tensor:
        """Measured amplitudes ``[b, N, N]`` float32 in unshifted FFT order (DC at pixel (0, 0))."""
        a = np.asarray(self.scan.diffraction[idx], dtype=np.float32)
        return to_unshifted(torch.from_numpy(a).to(self.device))

    def exit_wave_correction(self, psi: torch.Tensor, measured: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dpsi [b, N, N] complex64, misfit 0-d float64)``: the noise model's descent direction for exit
        waves ``psi`` against amplitudes ``measured`` (unshifted FFT order), moved back to real space
        (``psi`` and ``dpsi`` ``[b, K, N, N]`` for a mixed state)."""
        direction, misfit = self.noise.direction(fft2u(psi), measured, self._weights)
        return ifft2u(direction), misfit

    def misfit_at(self, positions: np.ndarray, amplitudes: np.ndarray) -> float:
        """The misfit per count of patterns the refinement has not used: ``amplitudes`` ``[b, N, N]`` (zero
        order at ``(N/2, N/2)``) measured at ``positions`` ``[b, 2]`` (x, y) object pixels, under the current
        object and probe (windows clamped to the canvas)."""
        positions = np.asarray(positions, np.float64)
        _, frac = split_positions(positions, self.n)
        with torch.no_grad():
            psi = self._exit(self._shifted_probes(torch.from_numpy(frac).to(self.device)),
                             self.obj.view(-1)[self._windows_at(positions)])
            measured = to_unshifted(torch.from_numpy(np.asarray(amplitudes, np.float32)).to(self.device))
            misfit = float(self.noise.pattern_misfit(fft2u(psi), measured, self._weights).double().sum())
        counts = float(np.sum(np.square(np.asarray(amplitudes, np.float64))))
        return misfit / max(counts, 1e-30)

    # ------------------------------------------------------------------ iterations
    @abstractmethod
    def iterate(self) -> float:
        """One pass over all patterns; returns the pass's misfit divided by the total counts."""

    def _record(self, it: int, t0: float, misfit: torch.Tensor | float) -> float:
        """Append the history entry of iteration ``it`` (0-based) begun at ``t0``; returns the misfit."""
        seconds = (self.history[-1]["seconds"] if self.history else 0.0) + time.perf_counter() - t0
        value = float(misfit) / max(self._total_counts, 1e-30)
        self.history.append({"iteration": it + 1, "seconds": seconds, "misfit": value})
        return value

    def _first_checked_pass(self) -> int:
        """Passes before the stopping rule may look at the misfit (an engine's warm-up)."""
        return 0

    def converged(self) -> bool:
        """The tolerance rule (module docstring) on the history so far."""
        tol = self.config.tolerance
        k = TOLERANCE_WINDOW
        if not tol or len(self.history) <= k + self._first_checked_pass():
            return False
        mis = [h["misfit"] for h in self.history[-1 - k:]]
        if not all(math.isfinite(m) and m > 0 for m in mis) or mis[-1] > mis[0]:
            return False
        return all(abs(a - b) < tol * b for a, b in zip(mis[:-1], mis[1:], strict=True))

    def run(self, *, progress: bool = False, callback: Callable[[Reconstructor], Any] | None = None) -> RefineResult:
        """Iterate until the stopping rule (module docstring) ends the run; returns the :class:`RefineResult`.

        ``callback(reconstructor)`` runs after each iteration (outside the timed part).
        """
        import sys

        from tqdm.auto import tqdm

        cfg = self.config
        self.stop_reason = "iteration cap"
        with tqdm(total=cfg.iterations, desc="refine", unit="it", file=sys.stderr,
                  disable=None if progress else True, leave=False) as bar:
            for _ in range(cfg.iterations):
                value = self.iterate()
                bar.set_postfix(misfit=f"{value:.4g}")
                bar.update(1)
                if callback is not None:
                    callback(self)
                if self.converged():
                    self.stop_reason = "converged"
                    break
                if cfg.time_limit is not None and self.history[-1]["seconds"] >= cfg.time_limit:
                    self.stop_reason = "time limit"
                    break
        return self.result()

    def illumination(self) -> np.ndarray:
        """``[H, W]`` float32 ``sum_k |P_k|**2`` over all scan positions, on the canvas."""
        return self._illumination().reshape(self.shape).cpu().numpy()

    def _illumination(self) -> torch.Tensor:
        acc = torch.zeros(self.obj.numel(), dtype=torch.float32, device=self.device)
        for idx in self._batches(np.arange(self.scan.n_points)):
            probes = self._probes(idx)
            acc.index_add_(0, self._window_index(idx).reshape(-1), self._intensities(idx, probes).reshape(-1))
        return acc

    def result(self) -> RefineResult:
        """The current state as a :class:`RefineResult` (copies), the object in transmission units (free
        space about 1) and the probe scaled to match (:attr:`RefineResult.transmission`)."""
        illum = self.illumination()
        cov = illum / max(float(illum.max()), 1e-30)
        cov[cov < 0.1] = 0.0
        obj = self.obj.cpu().numpy().astype(np.complex64)
        level = transmission_level(obj, cov)
        if not (math.isfinite(level) and level > 0):
            level = 1.0
        probe = (self.probe.cpu().numpy() * np.float32(level)).astype(np.complex64)
        return RefineResult(obj=(obj / np.float32(level)).astype(np.complex64), coverage=cov.astype(np.float32),
                            origin=self.origin, probe=probe[0] if probe.ndim == 3 else probe,
                            probe_modes=probe if probe.ndim == 3 else None, probe_refined=self.refine_probe,
                            positions=self.positions.copy(), history=[dict(h) for h in self.history],
                            scale=self.scale, engine=self.engine, noise=self.noise.name, alpha=self.alpha,
                            stop_reason=self.stop_reason, transmission=float(level), notes=dict(self.notes))


def preconditioner(illumination: torch.Tensor, alpha: float) -> torch.Tensor:
    """The whole-scan illumination preconditioner ``(1 - alpha) illumination + alpha max`` (same shape)."""
    return (1.0 - alpha) * illumination + alpha * float(illumination.max())


def _mode_sum(intensity: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """``intensity`` of ``probes`` ``[b, N, N]``, or summed over the modes of mixed-state probes ``[b, K, N, N]``."""
    return intensity.sum(dim=1) if probes.dim() == 4 else intensity
