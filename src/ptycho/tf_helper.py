"""``reassemble_position``: stitch predicted patches into one object image (reference name, numpy out).

No TensorFlow is involved; the name is the reference system's. Stitching is the core's
(:func:`ptychopinn.inference.stitch.stitch_patches`): only a central square window of every patch is
used, placed exactly at its sub-pixel position (each patch Fourier-shifted by its fraction of a pixel,
its window added at the nearest whole pixel), and overlaps are averaged (sum / coverage).

Window size. ``M`` is the window side for the reference's 64 x 64 patches (``M=20``: the central 31 % of
the patch, whose outer part the network predicts less reliably). For other patch sizes N the window is
scaled to ``round(M * N / 64)`` pixels (:func:`window_for`), so it covers the same fraction of the patch:
ptychodus always passes ``M=20``, and a literal 20-pixel window is most of a 32 x 32 patch, including its
less reliable outer part (measured: README, section "Use from ptychodus"), and too little of a 128 x 128
one (gaps between scan positions). At N=64 this is exactly the
reference behaviour.

Pixel convention: ptychodus's. The offsets are object-pixel coordinates as ptychodus computes them
(``ObjectGeometry.map_probe_positions_to_object_x_px``: the object centre is pixel ``(W-1)/2``), and the
object point at an offset lies under the patch's geometric centre ``((N-1)/2, (N-1)/2)``, where
ptychodus's own forward model puts the probe array's centre (``ProbeGeometry.resolve_patch_bounds``). So
patch pixel ``N//2`` is stitched at ``offset + ptychodus_centre_offset(N)`` (half a pixel further for even
N). The native ``ptychopinn`` commands instead put patch pixel ``N//2`` on the position (upstream
PtychoPINN's rule). Rows = y, columns = x; no flips or transposes. Frames:

* **Object frame.** When ``global_offsets`` are the ones produced by the latest :func:`ptycho.loader.load`
  of a scan that had an ``objectGuess`` (same array, or equal values), the canvas has the object's shape
  ``(H, W)`` and its pixel grid: canvas ``[y, x]`` is object pixel ``(y, x)``. This is what ptychodus
  assumes when it labels the result with the input object's centre and pixel size. Pixels no window
  reached are 0.
* **Scan frame** otherwise: an odd-sized canvas whose centre pixel ``((H-1)/2, (W-1)/2)`` is exactly the
  midpoint ``c`` of the offsets' bounding box (the centre ptychodus gives the objects it sizes for a scan,
  ``compute_object_geometry``), so a host that labels the canvas centre with its object's centre places
  it right when the scan is centred on the object; canvas pixel ``(row, col)`` is object point
  ``(c_y - (H-1)/2 + row, c_x - (W-1)/2 + col)``. (The reference centred its canvas, index ``side/2``, on
  the mean of the offsets: half a pixel from where ptychodus reads the centre.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ptycho import _frames
from ptycho._arrays import to_numpy
from ptychopinn.config_fields import is_int
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.io.product_h5 import ptychodus_centre_offset

__all__ = ["REFERENCE_N", "REFINE_ENV", "offsets_to_positions", "reassemble_position", "refine_iterations",
           "scan_frame", "window_for"]

REFINE_ENV = "PTYCHOPINN_REFINE_ITERATIONS"
"""Environment variable: refinement iterations after stitching (0 or unset = off)."""

REFERENCE_N = 64
"""Patch size for which ``M`` is taken literally (see the module docstring)."""


def offsets_to_positions(global_offsets: Any) -> np.ndarray:
    """``[P, 2]`` float64 (x, y) from offsets ``[P, 1, 2, 1]``, ``[P, 1, 1, 2]``, ``[P, 2, 1]`` or ``[P, 2]``."""
    g = to_numpy(global_offsets)
    if g.dtype.kind not in "iuf" or g.ndim < 2 or g.shape[0] == 0:
        raise DataFormatError(f"global_offsets: expected (P, 1, 2, 1) positions in pixels, found {describe_array(g)}; "
                              f"pass container.global_offsets")
    flat = g.reshape(g.shape[0], -1)
    if flat.shape[1] != 2:
        raise DataFormatError(f"global_offsets: expected one (x, y) pair per patch, found {describe_array(g)}; "
                              f"pass container.global_offsets, shape (P, 1, 2, 1)")
    return flat.astype(np.float64)


def _patch_stack(patches: Any) -> np.ndarray:
    p = to_numpy(patches)
    if p.ndim == 4 and p.shape[-1] == 1:
        p = p[..., 0]
    elif p.ndim == 4 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 3 or p.shape[1] != p.shape[2]:
        raise DataFormatError(f"patches: expected (P, N, N, 1) complex patches (one per offset), found "
                              f"{describe_array(p)}; pass the output of model.predict")
    return p


def window_for(M: int, N: int) -> int:  # noqa: N803
    """Stitch window side in pixels for the reference's ``M`` and patch size ``N``: ``round(M * N / 64)``,
    clipped to ``[1, N]``."""
    return int(min(N, max(1, round(M * N / REFERENCE_N))))


def scan_frame(positions: np.ndarray, window: int, n: int) -> tuple[tuple[int, int], tuple[float, float]]:
    """Canvas ``((H, W), origin (x0, y0))`` of the scan frame (see the module docstring) for ``[P, 2]`` (x, y)
    ptychodus offsets of patches of size ``n`` stitched with a ``window``-pixel window."""
    from ptychopinn.inference.stitch import centred_geometry

    mid = 0.5 * (positions.min(axis=0) + positions.max(axis=0))
    return centred_geometry(positions + ptychodus_centre_offset(n), window, centre=mid)


def reassemble_position(patches: Any, global_offsets: Any, M: int = 20) -> np.ndarray:  # noqa: N803
    """Stitch ``patches`` ``(P, N, N, 1)`` (or ``(P, N, N)``) complex, each centred (geometric centre
    ``((N-1)/2, (N-1)/2)``, ptychodus's convention) on its offset ``global_offsets`` ``(P, 1, 2, 1)`` (x, y)
    object pixels, into one 2-D complex64 numpy canvas, using the central ``window_for(M, N)`` square of every
    patch (``M`` pixels at N=64).

    The frame (object grid or scan frame) is chosen as described in the module docstring.
    """
    from ptychopinn.inference.stitch import stitch_patches

    if not is_int(M) or M < 1:
        raise ConfigError(f"M: expected the stitch window side in pixels (a positive integer), found {M!r}; "
                          f"use M=20")
    stack = _patch_stack(patches)
    pos = offsets_to_positions(global_offsets)
    if pos.shape[0] != stack.shape[0]:
        raise DataFormatError(f"reassemble_position: {stack.shape[0]} patches but {pos.shape[0]} offsets; pass the "
                              f"offsets of the same container the patches were predicted from")
    n = int(stack.shape[-1])
    window = window_for(int(M), n)
    shape = None
    if isinstance(global_offsets, np.ndarray):
        shape = _frames.object_shape_for(global_offsets)
    origin = (0.0, 0.0)
    if shape is None:
        shape, origin = scan_frame(pos, window, n)
    at = pos + ptychodus_centre_offset(n)  # the object point under patch pixel N//2
    obj, _ = stitch_patches(stack.astype(np.complex64, copy=False), at, window, shape=shape, origin=origin)
    iterations = refine_iterations()
    if iterations > 0:
        obj = _refined(obj, origin, global_offsets, iterations)
    return np.asarray(obj, dtype=np.complex64)


def refine_iterations() -> int:
    """Opt-in refinement after stitching: ``PTYCHOPINN_REFINE_ITERATIONS`` (default 0 = the reference
    behaviour). The only switch a ptychodus user has, since ptychodus's plugin calls this function as is."""
    import os

    text = os.environ.get(REFINE_ENV, "").strip()
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{REFINE_ENV}: expected a whole number of refinement iterations >= 0, found {text!r}; "
                          f"e.g. {REFINE_ENV}=20, or unset it")
    return value


def _refined(obj: np.ndarray, origin: tuple[float, float], global_offsets: Any, iterations: int) -> np.ndarray:
    import dataclasses
    import logging

    from ptychopinn.config import RefineConfig
    from ptychopinn.refine import refine_onto

    scan = _frames.scan_for(global_offsets) if isinstance(global_offsets, np.ndarray) else None
    if scan is None:
        logging.getLogger(__name__).warning(
            "%s=%d is set but these offsets did not come from ptycho.loader.load of a scan, so there are no "
            "patterns to refine against; returning the stitched object", REFINE_ENV, iterations)
        return obj
    native = dataclasses.replace(scan, positions=scan.positions + ptychodus_centre_offset(scan.N))
    return refine_onto(native, obj, origin, RefineConfig(iterations=iterations))
