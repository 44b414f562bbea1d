"""Which stitching frame a set of global offsets belongs to (module state shared by loader and tf_helper).

ptychodus labels the stitched canvas with the *input object's* pixel size and centre, so the canvas must
lie on that object's pixel grid. ``reassemble_position`` only receives patches and offsets, so
:func:`ptycho.loader.load` registers here the offsets it produced together with the shape of the scan's
``objectGuess``; ``reassemble_position`` looks them up (same array, or equal values) to choose the frame.
"""

from __future__ import annotations

from collections import deque

import numpy as np

_MAX_ENTRIES = 8  # a handful of live containers; older registrations fall back to the scan frame
_entries: deque[tuple[np.ndarray, tuple[int, int]]] = deque(maxlen=_MAX_ENTRIES)


def register(global_offsets: np.ndarray, object_shape: tuple[int, int]) -> None:
    """Remember that ``global_offsets`` (``[B, 1, 2, 1]`` object pixels) belong to an object ``(H, W)``."""
    _entries.append((global_offsets, (int(object_shape[0]), int(object_shape[1]))))


def object_shape_for(global_offsets: np.ndarray) -> tuple[int, int] | None:
    """The registered object shape for these offsets (identity or equal values), else None."""
    for arr, shape in reversed(_entries):
        if arr is global_offsets:
            return shape
    for arr, shape in reversed(_entries):
        if arr.shape == global_offsets.shape and np.array_equal(arr, global_offsets):
            return shape
    return None


def clear() -> None:
    """Forget every registration."""
    _entries.clear()
