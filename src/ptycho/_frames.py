"""Which stitching frame a set of global offsets belongs to (module state shared by loader and tf_helper).

ptychodus labels the stitched canvas with the *input object's* pixel size and centre, so the canvas must
lie on that object's pixel grid. ``reassemble_position`` only receives patches and offsets, so
:func:`ptycho.loader.load` registers here the offsets it produced together with the shape of the scan's
``objectGuess``; ``reassemble_position`` looks them up (same array, or equal values) to choose the frame.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

_MAX_ENTRIES = 8  # a handful of live containers; older registrations fall back to the scan frame
_entries: deque[tuple[np.ndarray, tuple[int, int] | None, Any]] = deque(maxlen=_MAX_ENTRIES)


def register(global_offsets: np.ndarray, object_shape: tuple[int, int] | None, scan: Any = None) -> None:
    """Remember that ``global_offsets`` (``[B, 1, 2, 1]`` object pixels) belong to an object ``(H, W)``
    (or None: unknown) and, optionally, to ``scan`` (a :class:`ptychopinn.data.scan.ScanData` with the
    patterns and the positions in ptychodus's convention, for opt-in refinement)."""
    shape = None if object_shape is None else (int(object_shape[0]), int(object_shape[1]))
    _entries.append((global_offsets, shape, scan))


def _entry(global_offsets: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None, Any] | None:
    for entry in reversed(_entries):
        if entry[0] is global_offsets:
            return entry
    for entry in reversed(_entries):
        arr = entry[0]
        if arr.shape == global_offsets.shape and np.array_equal(arr, global_offsets):
            return entry
    return None


def object_shape_for(global_offsets: np.ndarray) -> tuple[int, int] | None:
    """The registered object shape for these offsets (identity or equal values), else None."""
    entry = _entry(global_offsets)
    return None if entry is None else entry[1]


def scan_for(global_offsets: np.ndarray) -> Any:
    """The registered scan for these offsets, else None."""
    entry = _entry(global_offsets)
    return None if entry is None else entry[2]


def clear() -> None:
    """Forget every registration."""
    _entries.clear()
