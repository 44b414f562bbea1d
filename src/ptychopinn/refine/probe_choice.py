"""How the probe starts and whether it is refined, decided from the data before the engine runs.

Both decisions use the same measurement: a *trial*, :data:`TRIAL_ITERATIONS` rPIE passes from a flat object
on the :data:`TRIAL_PATTERNS` patterns nearest the middle of the scan (a compact patch, so they overlap) less
a few held out, scored by the misfit of the held-out patterns under the trial's object and probe (per count,
:func:`trial_misfit`): how well the result *predicts* patterns it did not see. The misfit of the fitted
patterns themselves would favour a probe so small that the patterns hardly overlap and each is fitted alone
(on a real zone-plate scan it chose a 6 px spot for a 27 px ring, and the object came out as dots).

* **Start of an estimated probe** (``probe_search``; ``'auto'``: when the scan's probe is
  :func:`~ptychopinn.io.probe.estimate_probe`'s). The mean pattern gives the probe's far-field amplitude
  (its aperture) but not its phase; a defocused probe (a zone plate out of focus: a wide ring or disk with
  fringes instead of a focused spot) differs from the zero-phase estimate by a quadratic far-field phase
  ``kappa * |q - q0|**2`` (Fresnel propagation). Its geometric radius in the object plane is ``N kappa R /
  pi`` pixels for an aperture of radius ``R`` frequency pixels (95 % of the far-field energy). The
  candidates are the zero-phase estimate and the probes of radius ``f * N / 2`` for each ``f`` in
  :data:`DEFOCUS_RADII`, with either sign of ``kappa``; the trial (with probe updates when the probe is
  refined) picks the one with the lowest misfit. Without a good start, the object of a defocused probe
  comes out as dots under a focused spot while the misfit still falls.
* **Whether to refine the probe** (``refine_probe='auto'``): yes for an estimated probe; for a given probe
  the trial runs with the probe fixed and with probe updates, and the probe is refined when the updates
  lower the misfit to less than :data:`PROBE_GAIN_RATIO` of the fixed probe's (the given probe does not
  explain the data). With a correct probe the two trials end within a few percent of each other.

Each decision is logged in one line (a warning when a given probe is overruled) and returned as notes for
the result's metadata.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
import torch

from ptychopinn.config import RefineConfig
from ptychopinn.data.scan import ScanData
from ptychopinn.io.probe import probe_is_estimated
from ptychopinn.physics.fft import fft2c, ifft2c

__all__ = ["DEFOCUS_RADII", "PROBE_GAIN_RATIO", "TRIAL_ITERATIONS", "TRIAL_PATTERNS", "choose_probe",
           "defocus_candidates", "trial_misfit", "trial_subset"]

TRIAL_PATTERNS = 128
"""Patterns of a trial: the ones nearest the scan's middle (all, for smaller scans)."""

TRIAL_ITERATIONS = 10
"""rPIE passes of a trial."""

TRIAL_BATCH = 16
"""Patterns per mini-batch in a trial (several updates per pass over the small subset)."""

DEFOCUS_RADII = (0.1, 0.17, 0.28, 0.45, 0.7)
"""Object-plane radii of the defocused candidates, as fractions of ``N / 2``."""

PROBE_GAIN_RATIO = 0.7
"""A given probe is refined when probe updates bring the trial misfit below this fraction of the fixed
probe's."""

HOLD_OUT_EVERY = 4
"""Every this-many-th pattern of the inner half of a trial subset is held out and scored (:func:`held_out`)."""

MIN_TRIAL_PATTERNS = 8
"""Fewer patterns than this make no trial: a given probe is kept, an estimated one refined from its estimate."""

_log = logging.getLogger("ptychopinn")


def _finite(x: float) -> float | None:
    """``x``, or None where it is not finite (the notes go into JSON metadata)."""
    return x if math.isfinite(x) else None


def trial_subset(scan: ScanData, k: int = TRIAL_PATTERNS) -> np.ndarray:
    """Indices of the ``k`` scan points nearest the median position, nearest first."""
    pos = np.asarray(scan.positions, np.float64)
    d = np.hypot(*(pos - np.median(pos, axis=0)).T)
    return np.argsort(d, kind="stable")[:min(k, pos.shape[0])]


def held_out(k: int) -> np.ndarray:
    """``[k]`` bool: the patterns of a trial subset (nearest the middle first) held out of its updates, every
    :data:`HOLD_OUT_EVERY`-th of the inner half (inside the others' field, so the others determine the object
    under them)."""
    out = np.zeros(k, bool)
    out[:k // 2:HOLD_OUT_EVERY] = True
    return out


def _sub_scan(scan: ScanData, idx: np.ndarray) -> ScanData:
    return ScanData(diffraction=np.asarray(scan.diffraction[idx], dtype=np.float32), positions=scan.positions[idx],
                    probe=scan.probe, valid_pixels=scan.valid_pixels)


def trial_config(config: RefineConfig, refine_probe: bool) -> RefineConfig:
    """The settings of a trial: ``config``'s misfit, alpha, momentum, device and seed, rPIE, probe updates from
    the first pass when ``refine_probe``, positions fixed, no prior (a trial starts flat on a subset of the
    patterns and asks what the data alone say about the probe)."""
    return dataclasses.replace(config, iterations=TRIAL_ITERATIONS, tolerance=None, time_limit=None,
                               engine="rpie", batch_size=min(config.batch_size, TRIAL_BATCH),
                               refine_probe=refine_probe, probe_start=1, probe_search=False,
                               refine_positions=False, probe_modes=1, prior_weight=0.0)


def trial_misfit(sub: ScanData, probe: np.ndarray, config: RefineConfig, refine_probe: bool) -> float:
    """The held-out misfit of a trial on ``sub`` (patterns nearest the middle first) started from ``probe``: the
    object and probe are refined on the patterns :func:`held_out` leaves in, and the misfit (per count) is that
    of the held-out patterns under the result. A probe that fits its own patterns without explaining its
    neighbours' (a spot so small that the patterns hardly overlap fits each one alone) predicts them badly."""
    from ptychopinn.refine.rpie import RPIE

    hold = held_out(sub.n_points)
    if not hold.any() or hold.all():
        return math.inf
    fit = dataclasses.replace(sub.subset(~hold), probe=np.asarray(probe, np.complex64))
    r = RPIE(fit, trial_config(config, refine_probe))
    for _ in range(TRIAL_ITERATIONS):
        r.iterate()
    value = r.misfit_at(sub.positions[hold], sub.diffraction[hold])
    return value if math.isfinite(value) else math.inf


def defocus_candidates(probe: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """``[(signed radius fraction, probe [N, N] complex64)]``: ``probe`` itself (0.0), then ``probe`` with the
    quadratic far-field phase of each radius in :data:`DEFOCUS_RADII` (module docstring), each sign. The
    phase is centred on the far field's energy centroid, so the candidates stay centred; their energy is
    ``probe``'s."""
    p = torch.from_numpy(np.asarray(probe, np.complex64))
    far = fft2c(p).numpy().astype(np.complex128)
    n = far.shape[-1]
    energy = np.abs(far) ** 2
    total = float(energy.sum())
    out: list[tuple[float, np.ndarray]] = [(0.0, np.asarray(probe, np.complex64))]
    if not total > 0:
        return out
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    cy, cx = float((energy * yy).sum() / total), float((energy * xx).sum() / total)
    rho2 = (yy - cy) ** 2 + (xx - cx) ** 2
    order = np.argsort(rho2, axis=None)
    cum = np.cumsum(energy.ravel()[order])
    edge = math.sqrt(float(rho2.ravel()[order][np.searchsorted(cum, 0.95 * total)]))
    edge = max(edge, 1.0)
    for frac in DEFOCUS_RADII:
        for sign in (1.0, -1.0):
            kappa = sign * math.pi * (frac * n / 2) / (n * edge)
            cand = ifft2c(torch.from_numpy((far * np.exp(1j * kappa * rho2)).astype(np.complex64))).numpy()
            out.append((sign * frac, cand.astype(np.complex64)))
    return out


def choose_probe(scan: ScanData, config: RefineConfig) -> tuple[ScanData, RefineConfig, dict[str, Any]]:
    """Resolve ``config.refine_probe`` and ``config.probe_search`` on ``scan`` (module docstring).

    Returns:
        ``(scan, config, notes)``: the scan with the chosen start probe (the same object when it is unchanged),
        the configuration with ``refine_probe`` True or False and ``probe_search`` False, and notes
        (``{'probe': one-line decision, 'probe_search': {...}, 'probe_trial': {...}}`` as applicable).
    """
    estimated = probe_is_estimated(scan.metadata)
    search = estimated if config.probe_search == "auto" else bool(config.probe_search)
    notes: dict[str, Any] = {}
    sub: ScanData | None = None
    if (search or config.refine_probe == "auto") and scan.n_points >= MIN_TRIAL_PATTERNS:
        sub = _sub_scan(scan, trial_subset(scan))
    refine = config.refine_probe
    if refine == "auto" and (estimated or sub is None):
        refine = estimated
        notes["probe"] = ("refined: it is estimated from the data" if estimated
                          else "kept as given: too few patterns for a trial")
    if search and sub is not None:
        scored = [(frac, cand, trial_misfit(sub, cand, config, refine is not False))
                  for frac, cand in defocus_candidates(scan.probe)]
        frac, best, mis = min(scored, key=lambda t: t[2])
        notes["probe_search"] = {"radius_fraction": frac, "trial_misfit": _finite(mis),
                                 "candidates": [[f, _finite(m)] for f, _, m in scored]}
        zero = scored[0][2]
        _log.info("probe start: defocus chosen by a trial of %d candidates: object-plane radius %s (trial misfit "
                  "%.4g; in focus %.4g)", len(scored), "in focus" if frac == 0 else f"{abs(frac):.2f} x N/2, "
                  f"{'+' if frac > 0 else '-'} curvature", mis, zero)
        scan = dataclasses.replace(scan, probe=best)
    if refine == "auto":
        assert sub is not None
        fixed = trial_misfit(sub, scan.probe, config, False)
        moving = trial_misfit(sub, scan.probe, config, True)
        refine = moving < PROBE_GAIN_RATIO * fixed
        notes["probe_trial"] = {"misfit_fixed": _finite(fixed), "misfit_refined": _finite(moving)}
        if refine:
            notes["probe"] = (f"refined: the given probe does not explain the data (trial misfit {fixed:.3g} "
                              f"with it fixed, {moving:.3g} with it refined)")
            _log.warning("refining the probe: the given probe does not explain the data (trial misfit %.3g with "
                         "it fixed, %.3g with it refined); pass --no-refine-probe to keep it", fixed, moving)
        else:
            notes["probe"] = f"kept as given (trial misfit {fixed:.3g} fixed, {moving:.3g} refined)"
    elif "probe" not in notes:
        notes["probe"] = "refined" if refine else "kept as given"
    if "probe" in notes and config.refine_probe == "auto" and not notes["probe"].startswith("refined: the given"):
        _log.info("probe: %s", notes["probe"])
    return scan, dataclasses.replace(config, refine_probe=bool(refine), probe_search=False), notes
