"""``load``: turn a grouped dict (from ``RawData.generate_grouped_data``) into a data container.

The container holds numpy arrays in the reference layouts (channels last). It also registers its
``global_offsets`` with the object's shape, so that :func:`ptycho.tf_helper.reassemble_position` called
with these offsets returns a canvas on the object's pixel grid (what ptychodus assumes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ptycho import _frames
from ptycho._arrays import probe_2d
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError

__all__ = ["PtychoDataContainer", "load", "split_data"]

_REQUIRED = ("X_full", "coords_offsets", "coords_relative")


class PtychoDataContainer:
    """Grouped data, numpy, reference names (B groups, C = gridsize**2 channels, N pattern size).

    Attributes:
        X: ``[B, N, N, C]`` float32 normalised amplitudes (mean per-pattern energy (N/2)**2); ``X * s``
            works with a Python float.
        Y: ``[B, N, N, C]`` complex64 ground-truth patches or None; ``Y_I``/``Y_phi`` its amplitude/phase.
        local_offsets (alias ``coords_nominal``, ``coords_true``, ``coords``): ``[B, 1, 2, C]`` float32,
            ``-(member - centre)`` in pixels, axis 2 = (x, y) (the reference sign).
        global_offsets: ``[B, 1, 2, 1]`` float64 group centres (x, y) in object pixels.
        nn_indices: ``[B, C]`` int64 scan-point indices. probe: ``[N, N]`` complex64.
        input_scale: the factor that normalised ``X``. object_shape: ``(H, W)`` of the scan's object or None.
    """

    def __init__(self, X: np.ndarray, local_offsets: np.ndarray, global_offsets: np.ndarray,  # noqa: N803
                 probe: np.ndarray, *, Y: np.ndarray | None = None, nn_indices: np.ndarray | None = None,  # noqa: N803
                 input_scale: float | None = None, object_shape: tuple[int, int] | None = None,
                 scan: Any = None) -> None:
        self.X = X
        self.local_offsets = local_offsets
        self.global_offsets = global_offsets
        self.probe = probe
        self.Y = Y
        self.nn_indices = nn_indices
        self.input_scale = input_scale
        self.object_shape = object_shape
        if object_shape is not None or scan is not None:
            _frames.register(global_offsets, object_shape, scan)

    @property
    def coords_nominal(self) -> np.ndarray:
        return self.local_offsets

    @property
    def coords_true(self) -> np.ndarray:
        return self.local_offsets

    @property
    def coords(self) -> np.ndarray:
        return self.local_offsets

    @property
    def Y_I(self) -> np.ndarray | None:  # noqa: N802 - reference name
        return None if self.Y is None else np.abs(self.Y).astype(np.float32)

    @property
    def Y_phi(self) -> np.ndarray | None:  # noqa: N802 - reference name
        return None if self.Y is None else np.angle(self.Y).astype(np.float32)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __repr__(self) -> str:
        return (f"PtychoDataContainer(X={self.X.shape}, local_offsets={self.local_offsets.shape}, "
                f"global_offsets={self.global_offsets.shape}, object_shape={self.object_shape})")


def split_data(n: int, train_frac: float, which: str) -> slice:
    """Rows of the ``'train'`` (first ``int(train_frac * n)``) or ``'test'`` (the rest) part."""
    if not (isinstance(train_frac, (int, float)) and 0.0 <= float(train_frac) <= 1.0):
        raise ConfigError(f"train_frac: expected a fraction in [0, 1], found {train_frac!r}; return e.g. 0.5 "
                          f"from the callback")
    n_train = int(float(train_frac) * n)
    if which == "train":
        return slice(0, n_train)
    if which == "test":
        return slice(n_train, n)
    raise ConfigError(f"which: expected 'train' or 'test' with create_split=True, found {which!r}; pass one of them")


def load(cb: Callable[[], Any], probeGuess: Any, which: str | None = None,  # noqa: N803
         create_split: bool = False) -> PtychoDataContainer:
    """Build a :class:`PtychoDataContainer` from ``cb()``, a grouped dict.

    ``create_split=True``: ``cb()`` returns ``(grouped, train_frac)`` and ``which`` ('train' or 'test')
    picks the first ``int(train_frac * B)`` groups or the rest. ``probeGuess``: ``(N, N)``, ``(1, N, N)``
    or ``(N, N, 1)`` complex.
    """
    if create_split:
        result = cb()
        if not (isinstance(result, tuple) and len(result) == 2):
            raise ConfigError("load(create_split=True): expected the callback to return (grouped_dict, train_frac), "
                              f"found {type(result).__name__}; return a 2-tuple or use create_split=False")
        grouped, train_frac = result
        rows = split_data(int(np.asarray(grouped["X_full"]).shape[0]), train_frac, str(which))
    else:
        grouped, rows = cb(), slice(None)
    if not isinstance(grouped, dict) or any(k not in grouped for k in _REQUIRED):
        found = sorted(grouped) if isinstance(grouped, dict) else type(grouped).__name__
        raise DataFormatError(f"load: expected the grouped dict of RawData.generate_grouped_data with keys "
                              f"{list(_REQUIRED)}, found {found}; pass lambda: raw.generate_grouped_data(N, ...)")
    x = np.asarray(grouped["X_full"], dtype=np.float32)[rows]
    local = np.asarray(grouped["coords_relative"], dtype=np.float32)[rows]
    glob = np.asarray(grouped["coords_offsets"], dtype=np.float64)[rows]
    y = grouped.get("Y")
    y = None if y is None else np.asarray(y)[rows]
    nn = grouped.get("nn_indices")
    nn = None if nn is None else np.asarray(nn)[rows]
    obj = grouped.get("objectGuess")
    shape = None if obj is None else (int(np.shape(obj)[-2]), int(np.shape(obj)[-1]))
    scale = grouped.get("input_scale")
    return PtychoDataContainer(x, local, glob, probe_2d(probeGuess), Y=y, nn_indices=nn,
                               input_scale=None if scale is None else float(scale), object_shape=shape,
                               scan=_scan_of_groups(grouped, rows, probe_2d(probeGuess)))


def _scan_of_groups(grouped: dict[str, Any], rows: Any, probe: np.ndarray) -> Any:
    """The scan points behind the groups (each once), for opt-in refinement of the stitched object:
    a :class:`ScanData` with positions in ptychodus's convention, or None when the dict lacks the keys."""
    if not all(k in grouped for k in ("diffraction", "coords_nn", "nn_indices")):
        return None
    idx = np.asarray(grouped["nn_indices"])[rows].reshape(-1)
    diff = np.asarray(grouped["diffraction"])[rows]  # [B, N, N, C]
    pos = np.asarray(grouped["coords_nn"], dtype=np.float64)[rows]  # [B, 1, 2, C]
    c = diff.shape[-1]
    diff = np.moveaxis(diff, -1, 1).reshape(-1, diff.shape[1], diff.shape[2])
    pos = np.moveaxis(pos[:, 0], -1, 1).reshape(-1, 2)
    _, first = np.unique(idx, return_index=True)
    if first.size == 0 or pos.shape[0] != idx.size or c < 1:
        return None
    return ScanData(diffraction=diff[first], positions=pos[first], probe=probe)
