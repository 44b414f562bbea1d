"""Iterative refinement on the physics: start from the network's reconstruction (or a flat object) and
minimise the data misfit by illumination-preconditioned mini-batch updates of the object, optionally
of the probe and the scan positions. See :mod:`ptychopinn.refine.engine` for the model and updates.

Importing this package is cheap; torch is imported by :func:`refine_scan` and the engine module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from ptychopinn.config import RefineConfig
    from ptychopinn.data.scan import ScanData
    from ptychopinn.refine.engine import Refiner, RefineResult

__all__ = ["refine_onto", "refine_scan"]


def refine_scan(scan: ScanData, config: RefineConfig | None = None, *, start: np.ndarray | None = None,
                start_origin: tuple[float, float] = (0.0, 0.0), progress: bool = False,
                callback: Callable[[Refiner], Any] | None = None) -> RefineResult:
    """Refine the object (and optionally probe and positions) of ``scan``.

    Args:
        scan: the scan; its ``diffraction`` is read batch by batch (memory-mapped scans work). Any
            ground truth it holds is ignored.
        config: iterations, time limit, noise model, what to refine (:class:`~ptychopinn.config.RefineConfig`).
        start: ``[h, w]`` complex start object, e.g. ``Reconstruction.obj`` of the network; None = flat.
        start_origin: ``(x0, y0)`` object pixel of ``start[0, 0]`` (``Reconstruction.origin``).
        progress: tqdm bar on stderr with the misfit.
        callback: called with the :class:`~ptychopinn.refine.engine.Refiner` after each iteration.

    Returns:
        :class:`~ptychopinn.refine.engine.RefineResult` (object on the scanned region's canvas, probe,
        positions, misfit history).
    """
    from ptychopinn.refine.engine import Refiner

    return Refiner(scan, config, start=start, start_origin=start_origin).run(progress=progress, callback=callback)


def refine_onto(scan: ScanData, start: np.ndarray, start_origin: tuple[float, float] = (0.0, 0.0),
                config: RefineConfig | None = None) -> np.ndarray:
    """Refine ``start`` and return the result on ``start``'s own canvas (same shape and origin).

    For callers whose output grid is fixed (the ptychodus surfaces): pixels the refinement constrains
    (illumination at least 10 % of its peak) take the refined values, all others keep ``start``'s.

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
        part = res.obj[r0 - oy:r1 - oy, c0 - ox:c1 - ox]
        covered = res.coverage[r0 - oy:r1 - oy, c0 - ox:c1 - ox] > 0
        out[r0:r1, c0:c1] = np.where(covered, part, out[r0:r1, c0:c1])
    return out
