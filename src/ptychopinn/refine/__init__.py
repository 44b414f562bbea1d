"""Iterative refinement on the physics: start from the network's reconstruction (or a flat object) and
minimise the data misfit, optionally also over the probe and the scan positions.

Engines (``RefineConfig.engine``): :mod:`~ptychopinn.refine.rpie` (mini-batch rPIE with momentum; object,
probe, positions) and :mod:`~ptychopinn.refine.cg` (rPIE warm-up, then whole-scan conjugate gradients with
exact step lengths; object only). :mod:`~ptychopinn.refine.base` holds the model and the stopping rule,
:mod:`~ptychopinn.refine.probe_choice` decides the probe's start and whether it is refined (``'auto'``) before
the engine is chosen, :mod:`~ptychopinn.refine.positions` searches positions for the rpie engine.

Importing this package is cheap; torch is imported by :func:`refine_scan` and the engine modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from ptychopinn.config import RefineConfig
    from ptychopinn.data.scan import ScanData
    from ptychopinn.refine.base import Reconstructor, RefineResult

__all__ = ["REFINE_BYTES_PER_PIXEL", "create_reconstructor", "refine_onto", "refine_scan", "resolve_engine"]


REFINE_BYTES_PER_PIXEL = 64
"""Memory per canvas pixel of a refinement, rounded up: the complex64 object, its copy of the previous pass and
its momentum, the complex64 and float32 update accumulators, the start canvas, and the float32 coverage and
complex64 object of the result."""

_CANVAS_SLACK = 16  # pixels added to the windows' bounding box: the position margin and rounding


def _check_canvas(scan: ScanData) -> None:
    """Refuse a scan whose refinement canvas (the bounding box of its windows) exceeds the memory limit, before
    anything is allocated: two positions far apart, or in metres instead of pixels, ask for gigabytes."""
    import numpy as np

    from ptychopinn.inference.stitch import check_canvas_memory

    pos = np.asarray(scan.positions, dtype=np.float64)
    span = pos.max(axis=0) - pos.min(axis=0) + scan.N + _CANVAS_SLACK
    check_canvas_memory((float(span[1]), float(span[0])), bytes_per_pixel=REFINE_BYTES_PER_PIXEL,
                        what="the refinement canvas")


def _check_result(result: RefineResult) -> None:
    """Refuse a refinement that produced no usable object (non-finite or all-zero values) instead of saving it."""
    import numpy as np

    from ptychopinn.errors import DataFormatError

    obj = result.obj
    if not np.all(np.isfinite(obj)) or not np.any(np.abs(obj) > 0) or not np.isfinite(result.scale):
        raise DataFormatError("refinement produced an object with non-finite or all-zero values (the start object "
                              "or the data are out of range for float32); expected finite amplitudes; check the "
                              "start reconstruction (--init) and the diffraction units, or start from --flat")


def resolve_engine(scan: ScanData, config: RefineConfig) -> str:
    """The engine that runs ``config`` on ``scan``: ``config.engine``, or for ``'auto'`` ``'cg'`` when only
    the object is refined and the cg engine's cache (:func:`ptychopinn.refine.cg.cache_bytes`) fits a
    quarter of :func:`ptychopinn.limits.memory_limit`, else ``'rpie'``. ``refine_probe='auto'`` counts as
    refining the probe for an estimated probe and as not refining it otherwise (:func:`create_reconstructor`
    decides it first, by a trial, and passes the decision here)."""
    if config.engine != "auto":
        return config.engine
    from ptychopinn.io.probe import probe_is_estimated
    from ptychopinn.refine.modes import resolve_modes

    probe = config.refine_probe is True or (config.refine_probe == "auto" and probe_is_estimated(scan.metadata))
    if probe or config.refine_positions or resolve_modes(scan, config.probe_modes) > 1:
        return "rpie"
    from ptychopinn.limits import memory_limit
    from ptychopinn.refine.cg import cache_bytes

    return "cg" if cache_bytes(scan.n_points, scan.N) <= memory_limit() // 4 else "rpie"


def create_reconstructor(scan: ScanData, config: RefineConfig | None = None, *, start: np.ndarray | None = None,
                         start_origin: tuple[float, float] = (0.0, 0.0), prior: np.ndarray | None = None,
                         prior_origin: tuple[float, float] | None = None,
                         device: str | None = None) -> Reconstructor:
    """The engine :func:`resolve_engine` picks, set up on ``scan`` (arguments as :func:`refine_scan`);
    call its ``run()`` or ``iterate()``. ``'auto'`` probe settings are decided first
    (:func:`ptychopinn.refine.probe_choice.choose_probe`: a few short trials); the engine's ``notes`` say
    what was decided."""
    from ptychopinn.config import RefineConfig
    from ptychopinn.errors import ConfigError

    cfg = config or RefineConfig()
    if not isinstance(cfg, RefineConfig):
        raise ConfigError(f"config: expected a RefineConfig, found {type(cfg).__name__}; build one with "
                          f"RefineConfig(...)")
    _check_canvas(scan)
    notes: dict[str, Any] = _check_modes(scan, cfg)
    if notes:
        cfg = cfg.replace(refine_probe=True)
    if cfg.engine == "cg" and cfg.refine_probe == "auto":  # asked for by name, cg refines the object only
        cfg = cfg.replace(refine_probe=False)
    if cfg.refine_probe == "auto" or cfg.probe_search is not False:
        from ptychopinn.refine.probe_choice import choose_probe

        scan, cfg, found = choose_probe(scan, cfg)
        notes = {**found, **notes}
    engine: Reconstructor
    if resolve_engine(scan, cfg) == "cg":
        from ptychopinn.limits import check_memory
        from ptychopinn.refine.cg import ConjugateGradient, cache_bytes

        check_memory(cache_bytes(scan.n_points, scan.N), "the cg refinement engine's far-field cache",
                     "refine with engine 'rpie' (--engine rpie), which reads the patterns batch by batch")
        engine = ConjugateGradient(scan, cfg, start=start, start_origin=start_origin, prior=prior,
                                   prior_origin=prior_origin, device=device)
    else:
        from ptychopinn.refine.rpie import RPIE

        engine = RPIE(scan, cfg, start=start, start_origin=start_origin, prior=prior, prior_origin=prior_origin,
                      device=device)
    engine.notes.update(notes)
    return engine


def _check_modes(scan: ScanData, cfg: RefineConfig) -> dict[str, Any]:
    """Notes (``{'probe': ...}``) when ``cfg`` adds probe modes to the scan's, which must then be refined: ``{}``
    when it does not.

    Raises:
        ConfigError: modes added with the probe held fixed, or mixed states with position refinement.
    """
    from ptychopinn.errors import ConfigError
    from ptychopinn.refine.modes import file_modes, resolve_modes

    k, have = resolve_modes(scan, cfg.probe_modes), file_modes(scan)
    if k > 1 and cfg.refine_positions:
        raise ConfigError(f"probe_modes: position refinement models a single probe mode, found {k} modes; refine "
                          "the positions with --probe-modes 1 first, then the modes with the corrected positions")
    if k <= have:
        return {}
    if cfg.refine_probe is False:
        raise ConfigError(f"probe_modes: {k} modes asked for, the scan carries {have}; the added modes are only a "
                          "start and must be refined: drop --no-refine-probe (or refine_probe=False)")
    note = f"refined: {k - have} probe mode(s) added to the scan's {have}"
    import logging

    logging.getLogger("ptychopinn").info("probe: %s", note)
    return {"probe": note}


def refine_scan(scan: ScanData, config: RefineConfig | None = None, *, start: np.ndarray | None = None,
                start_origin: tuple[float, float] = (0.0, 0.0), prior: np.ndarray | None = None,
                prior_origin: tuple[float, float] | None = None, progress: bool = False,
                callback: Callable[[Reconstructor], Any] | None = None) -> RefineResult:
    """Refine the object (and optionally probe and positions) of ``scan``.

    Args:
        scan: the scan; its ``diffraction`` is read batch by batch (memory-mapped scans work). Any
            ground truth it holds is ignored.
        config: engine, iterations, stopping rule, noise model, what to refine
            (:class:`~ptychopinn.config.RefineConfig`).
        start: ``[h, w]`` complex start object, e.g. ``Reconstruction.obj`` of the network; None = flat.
        start_origin: ``(x0, y0)`` object pixel of ``start[0, 0]`` (``Reconstruction.origin``).
        prior: ``[h, w]`` complex image pulled toward with ``config.prior_weight`` > 0
            (:mod:`~ptychopinn.refine.prior`), e.g. the network's; None: ``start``. Ignored at weight 0.
        prior_origin: ``(x0, y0)`` object pixel of ``prior[0, 0]``; None: ``start_origin`` (then ``prior`` must
            have ``start``'s shape).
        progress: tqdm bar on stderr with the misfit.
        callback: called with the :class:`~ptychopinn.refine.base.Reconstructor` after each iteration.

    Returns:
        :class:`~ptychopinn.refine.base.RefineResult` (object on the scanned region's canvas, probe,
        positions, misfit history, why it stopped).
    """
    result = create_reconstructor(scan, config, start=start, start_origin=start_origin, prior=prior,
                                  prior_origin=prior_origin).run(progress=progress, callback=callback)
    _check_result(result)
    last = result.history[-1] if result.history else {}
    if "position_change_rms" in last:
        import logging

        result.notes["positions"] = (f"moved {last['position_change_rms']:.2f} px rms, "
                                     f"{last['position_change_median']:.2f} px median from the given positions")
        logging.getLogger("ptychopinn").info("positions: %s", result.notes["positions"])
    return result


def refine_onto(scan: ScanData, start: np.ndarray, start_origin: tuple[float, float] = (0.0, 0.0),
                config: RefineConfig | None = None) -> np.ndarray:
    """Refine ``start`` and return the result on ``start``'s own canvas (same shape and origin).

    For callers whose output grid is fixed (the ptychodus surfaces): pixels the refinement constrains
    (illumination at least 10 % of its peak) take the refined values, in ``start``'s units (the refined
    object times ``transmission / scale``, :class:`~ptychopinn.refine.base.RefineResult`), all others keep
    ``start``'s.

    Args:
        scan: the scan (positions in the native convention: patch pixel ``N//2`` on each position).
        start: ``[H, W]`` complex canvas to start from and to return the result on.
        start_origin: ``(x0, y0)`` object pixel of ``start[0, 0]`` (integers).
        config: :class:`~ptychopinn.config.RefineConfig`.

    Returns:
        ``[H, W]`` complex64.
    """
    import numpy as np

    res = refine_scan(scan, config, start=start, start_origin=start_origin)
    out = np.array(start, dtype=np.complex64, copy=True)
    h, w = out.shape
    ox = int(round(res.origin[0] - start_origin[0]))
    oy = int(round(res.origin[1] - start_origin[1]))
    r0, c0 = max(0, oy), max(0, ox)
    r1, c1 = min(h, oy + res.obj.shape[0]), min(w, ox + res.obj.shape[1])
    if r1 > r0 and c1 > c0:
        part = res.obj[r0 - oy:r1 - oy, c0 - ox:c1 - ox] * np.float32(res.transmission / res.scale)
        covered = res.coverage[r0 - oy:r1 - oy, c0 - ox:c1 - ox] > 0
        out[r0:r1, c0:c1] = np.where(covered, part, out[r0:r1, c0:c1])
    return out
