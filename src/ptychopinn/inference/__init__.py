"""Inference: batched prediction over a scan and streaming stitching into one object.

Importing this package imports torch. Output grid convention: ``obj[y, x]`` is object pixel (row y,
column x) when the canvas origin is ``(0, 0)`` (the default); see :mod:`ptychopinn.inference.stitch`.
"""

from ptychopinn.inference.predict import (
    Reconstruction,
    iter_predictions,
    reconstruct,
    scan_groups,
)
from ptychopinn.inference.stitch import Stitcher, canvas_geometry, crop_window, stitch_patches
from ptychopinn.runtime import resolve_device

__all__ = [
    "Reconstruction",
    "Stitcher",
    "canvas_geometry",
    "crop_window",
    "iter_predictions",
    "reconstruct",
    "resolve_device",
    "scan_groups",
    "stitch_patches",
]
