"""Reconstruction NPZ files (what ``ptychopinn infer`` / ``refine`` write) and the objects of other files.

Keys: ``obj`` [H, W] complex64, ``coverage`` [H, W] float32, ``origin_xy`` [2] float64 (object pixel of
``obj[0, 0]``), ``positions`` [M, 2] float64 (x, y) object pixels, ``window`` int64 (stitch window, 0 for
refinement), ``pixel_convention`` (str), ``_metadata`` (JSON str; carries ``pixel_size_m`` when known)
and optional extra arrays (e.g. the refined ``probe`` [N, N] complex64 and ``misfit`` [K]). Readable with
``np.load(path)`` (no pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.errors import DataFormatError
from ptychopinn.io.atomic import atomic_write
from ptychopinn.io.metadata import parse_metadata
from ptychopinn.io.schema import object_layout, read_small

PIXEL_CONVENTION = (
    "obj[row, col] is object pixel (y, x) = (origin_y + row, origin_x + col); positions are (x, y) "
    "in object pixels, x = column, y = row; pixel (0, 0) is the top-left pixel"
)


def is_reconstruction(names: set[str]) -> bool:
    """True for the member names (without ``.npy``) of a reconstruction NPZ."""
    return "obj" in names and not ({"diffraction", "diff3d"} & names)


def save_reconstruction_npz(path: str | os.PathLike[str], recon: Any, *, extra: dict[str, Any] | None = None,
                            arrays: dict[str, Any] | None = None) -> Path:
    """Write a reconstruction NPZ atomically (keys in the module docstring).

    Args:
        path: destination (missing folders are created).
        recon: an object with ``obj`` [H, W] complex, ``coverage`` [H, W], ``origin`` (x0, y0), ``positions``
            [M, 2] and optionally ``window``, ``n_patterns``, ``n_groups``, ``input_scale``.
        extra: JSON-serialisable entries added to ``_metadata``.
        arrays: extra arrays to store.
    """
    meta = {k: getattr(recon, k) for k in ("n_patterns", "n_groups", "input_scale") if hasattr(recon, k)}
    meta.update(extra or {})
    # Any: numpy's stub lets ** keyword arrays fill its allow_pickle: bool parameter
    more: dict[str, Any] = {name: np.asarray(v) for name, v in (arrays or {}).items()}
    with atomic_write(path) as fh:
        np.savez(fh, obj=np.asarray(recon.obj).astype(np.complex64), coverage=np.asarray(recon.coverage, np.float32),
                 origin_xy=np.asarray(recon.origin, dtype=np.float64),
                 positions=np.asarray(recon.positions, dtype=np.float64),
                 window=np.asarray(getattr(recon, "window", 0), dtype=np.int64),
                 pixel_convention=np.asarray(PIXEL_CONVENTION), _metadata=np.asarray(json.dumps(meta)), **more)
    return Path(path)


def load_reconstruction(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """``(obj [H, W] complex64, coverage [H, W] float32, origin (x0, y0))`` of a reconstruction NPZ (any NPZ with
    an ``obj`` key; a missing ``coverage`` is where ``|obj| > 0``, a missing origin is (0, 0)).

    Raises:
        FileNotFoundError, DataFormatError (not a readable NPZ, no ``obj``, wrong shapes or dtypes).
    """
    from ptychopinn.io.npz import NpzSource

    with NpzSource(path) as src:
        p = src.path
        if "obj" not in src.keys():
            raise DataFormatError(f"{p}: expected a reconstruction NPZ with key 'obj' (as written by `ptychopinn "
                                  f"infer`), found keys {sorted(src.keys())}")
        obj = read_small(src, "obj")
        if obj.ndim != 2 or not np.iscomplexobj(obj):
            raise DataFormatError(f"{p}: 'obj' must be a 2-D complex array, found shape {obj.shape} dtype {obj.dtype}")
        coverage = (np.abs(obj) > 0).astype(np.float32)
        if "coverage" in src.keys():
            coverage = read_small(src, "coverage")
            if coverage.shape != obj.shape or coverage.dtype.kind not in "iuf":
                raise DataFormatError(f"{p}: 'coverage' must be real {obj.shape}, found shape {coverage.shape} "
                                      f"dtype {coverage.dtype}")
        origin = (0.0, 0.0)
        if "origin_xy" in src.keys():
            o = read_small(src, "origin_xy")
            if o.shape != (2,) or o.dtype.kind not in "iuf" or not np.all(np.isfinite(o)):
                raise DataFormatError(f"{p}: 'origin_xy' must be 2 finite numbers, found shape {o.shape} "
                                      f"dtype {o.dtype}")
            origin = (float(o[0]), float(o[1]))
    if not np.all(np.isfinite(obj)):
        raise DataFormatError(f"{p}: 'obj' contains NaN/Inf values; the reconstruction is broken: redo it")
    return obj.astype(np.complex64), coverage.astype(np.float32), origin


def reconstruction_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``_metadata`` JSON of a reconstruction NPZ ({} when absent)."""
    from ptychopinn.io.npz import NpzSource

    with NpzSource(path) as src:
        return parse_metadata(src.metadata_text(), src.path)


def object_from_source(src: Any, keys: tuple[str, ...] = ("objectGuess", "obj", "object")) -> np.ndarray:
    """The first of ``keys`` in an array source as ``[H, W]`` complex64 (a ground-truth object)."""
    for key in keys:
        if key in src.keys():
            arr = object_layout(read_small(src, key), src.path, key)
            return arr.astype(np.complex64)
    raise DataFormatError(f"{src.path}: expected a ground-truth object under 'objectGuess' (scan) or 'obj' "
                          f"(reconstruction), found keys {sorted(src.keys())}")
