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

__all__ = ["REFINE_BYTES_PER_PIXEL", "refine_onto", "refine_scan"]

REFINE_BYTES_PER_PIXEL = 64
"""Memory per canvas pixel of a refinement, rounded up: the complex64 object, its copy of the previous pass and
its momentum, the complex64 and float32 update accumulators, the start canvas, and the float32 coverage and
complex64 object of the result."""

_CANVAS_SLACK = 16  # pixels added to the windows' bounding box: the position margin and rounding
_START_RANGE = (1e-6, 1e6)  # peak start amplitudes outside this range are rescaled before the refinement


def _check_canvas(scan: ScanData) -> None:
    """Refuse a scan whose refinement canvas (the bounding box of its windows) exceeds the memory limit, before
    anything is allocated: two positions far apart, or in metres instead of pixels, ask for gigabytes."""
    import numpy as np

    from ptychopinn.inference.stitch import check_canvas_memory

    pos = np.asarray(scan.positions, dtype=np.float64)
    span = pos.max(axis=0) - pos.min(axis=0) + scan.N + _CANVAS_SLACK
    check_canvas_memory((float(span[1]), float(span[0])), bytes_per_pixel=REFINE_BYTES_PER_PIXEL,
                        what="the refinement canvas")


def _scaled_start(start: np.ndarray | None) -> tuple[np.ndarray | None, float]:
    """``(start / peak, peak)`` for a start object whose peak amplitude lies outside :data:`_START_RANGE`, else
    ``(start, 1.0)``. The refinement rescales its start to the measured counts anyway, but squaring amplitudes
    of 1e30 (or 1e-30) in float32 overflows (underflows) and would silently give an all-zero object."""
    import numpy as np

    if start is None:
        return None, 1.0
    s = np.asarray(start)
    if not np.issubdtype(s.dtype, np.number) or s.size == 0 or not np.all(np.isfinite(s)):
        return start, 1.0  # the Refiner refuses these with its own messages
    peak = float(np.max(np.abs(s.astype(np.complex128))))
    if peak == 0 or _START_RANGE[0] <= peak <= _START_RANGE[1]:
        return start, 1.0
    return (s.astype(np.complex128) / peak).astype(np.complex64), peak


def _check_result(result: RefineResult) -> None:
    """Refuse a refinement that produced no usable object (non-finite or all-zero values) instead of saving it."""
    import numpy as np

    from ptychopinn.errors import DataFormatError

    obj = result.obj
    if not np.all(np.isfinite(obj)) or not np.any(np.abs(obj) > 0) or not np.isfinite(result.scale):
        raise DataFormatError("refinement produced an object with non-finite or all-zero values (the start object "
                              "or the data are out of range for float32); expected finite amplitudes; check the "
                              "start reconstruction (--init) and the diffraction units, or start from --flat")


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

    _check_canvas(scan)
    start, peak = _scaled_start(start)
    result = Refiner(scan, config, start=start, start_origin=start_origin).run(progress=progress, callback=callback)
    result.scale /= peak  # the factor applied to the caller's start object
    _check_result(result)
    return result


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
