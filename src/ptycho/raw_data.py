"""``RawData``: one scan with the reference system's attribute names, and its grouping.

Attributes (M scan points, N pattern size):

* ``xcoords``, ``ycoords``, ``xcoords_start``, ``ycoords_start``: ``[M]`` float64 probe centres in object
  pixels, x = column, y = row (``*_start`` default to the plain coordinates).
* ``diff3d``: ``[M, N, N]`` float32 diffraction **amplitude** sqrt(counts), zero frequency at
  ``(N/2, N/2)``. Inputs may be photon counts or amplitudes: with ``units='auto'`` (the default, and
  what ptychodus gets) integer dtypes and integer-valued floats above 1 are counts and get a square
  root, anything else is taken as amplitude (rule in :mod:`ptychopinn.io.units`; pass
  ``units='intensity'``/``'amplitude'`` to decide yourself). ``metadata['input_units']`` records the
  decision.
* ``probeGuess``: ``[N, N]`` complex64 (``(1, N, N)`` ptychodus and ``(N, N, 1)`` inputs are accepted;
  with several modes mode 0 is used).
* ``scan_index``: ``[M]`` int64. ``objectGuess``: ``[H, W]`` complex64 or None. ``Y``: ``[M, N, N]``
  complex64 ground-truth patches or None.

:meth:`RawData.generate_grouped_data` returns the reference's grouped dict; see its docstring for the
meaning of ``nsamples`` here (every scan point is always covered).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ptycho import params
from ptycho._arrays import probe_2d, to_numpy
from ptychopinn.config_fields import is_int
from ptychopinn.data.grouping import Groups, effective_neighbor_count, group_positions
from ptychopinn.data.normalize import input_scale
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.io.units import to_amplitude

__all__ = ["LOCAL_OFFSET_SIGN", "RawData"]

logger = logging.getLogger(__name__)

LOCAL_OFFSET_SIGN = -1
"""``coords_relative = LOCAL_OFFSET_SIGN * (member - centre)``: the reference system's sign. The core
(:mod:`ptychopinn.data.grouping`) uses ``member - centre``; conversions flip it exactly once."""


def _coords(name: str, a: Any, m: int | None = None) -> np.ndarray:
    arr = to_numpy(a)
    if arr.dtype.kind not in "iuf":
        raise DataFormatError(f"{name}: expected real coordinates in object pixels, found {describe_array(arr)}; "
                              f"pass float pixel positions")
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if m is not None and arr.shape[0] != m:
        raise DataFormatError(f"{name}: expected {m} values (one per diffraction pattern), found {arr.shape[0]}; "
                              f"give one coordinate per pattern")
    return arr


def _patterns(diff3d: Any, units: str) -> tuple[np.ndarray, str]:
    d = to_numpy(diff3d)
    if d.ndim == 4 and d.shape[-1] == 1:
        d = d[..., 0]  # (M, N, N, 1) channels-last
    if d.ndim != 3:
        raise DataFormatError(f"diff3d: expected diffraction patterns (M, N, N), found {describe_array(d)}; "
                              f"stack the patterns along the first axis")
    return to_amplitude(d, units)


def _inside(x: np.ndarray, y: np.ndarray, shape: tuple[int, ...]) -> bool:
    h, w = shape
    return bool(np.all((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)))


def _to_bnnc(stack: np.ndarray) -> np.ndarray:
    """``[B, C, N, N]`` -> channels-last ``[B, N, N, C]`` (contiguous)."""
    return np.ascontiguousarray(np.moveaxis(stack, 1, -1))


def _coord_tensors(pos: np.ndarray, groups_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(coords_nn [B,1,2,C], coords_offsets [B,1,2,1], coords_relative [B,1,2,C])`` in the reference
    layout (axis 2 = (x, y)) from positions ``[M, 2]`` and member indices ``[B, C]``."""
    members = pos[groups_idx]  # [B, C, 2]
    centre = members.mean(axis=1)  # [B, 2]
    nn = np.transpose(members, (0, 2, 1))[:, None]  # [B, 1, 2, C]
    offsets = centre[:, None, :, None]  # [B, 1, 2, 1]
    relative = LOCAL_OFFSET_SIGN * (nn - offsets)
    return nn, offsets, relative


class RawData:
    """One scan with reference attribute names (see the module docstring for shapes and units)."""

    def __init__(
        self,
        xcoords: Any,
        ycoords: Any,
        xcoords_start: Any,
        ycoords_start: Any,
        diff3d: Any,
        probeGuess: Any,  # noqa: N803 - reference argument names
        scan_index: Any,
        objectGuess: Any = None,  # noqa: N803
        Y: Any = None,  # noqa: N803
        norm_Y_I: Any = None,  # noqa: N803
        metadata: dict[str, Any] | None = None,
        *,
        units: str = "auto",
    ) -> None:
        amp, units_used = _patterns(diff3d, units)
        m = amp.shape[0]
        self.diff3d: np.ndarray = amp
        self.xcoords: np.ndarray = _coords("xcoords", xcoords, m)
        self.ycoords: np.ndarray = _coords("ycoords", ycoords, m)
        self.xcoords_start: np.ndarray = (self.xcoords.copy() if xcoords_start is None
                                          else _coords("xcoords_start", xcoords_start, m))
        self.ycoords_start: np.ndarray = (self.ycoords.copy() if ycoords_start is None
                                          else _coords("ycoords_start", ycoords_start, m))
        self.probeGuess: np.ndarray = probe_2d(probeGuess)  # noqa: N815
        if scan_index is None:
            self.scan_index: np.ndarray = np.zeros(m, dtype=np.int64)
        else:
            self.scan_index = np.asarray(to_numpy(scan_index)).reshape(-1).astype(np.int64)
        self.objectGuess: np.ndarray | None = None  # noqa: N815
        if objectGuess is not None:
            obj = np.squeeze(to_numpy(objectGuess))
            if obj.ndim != 2:
                raise DataFormatError(f"objectGuess: expected a 2-D [H, W] complex object, found "
                                      f"{describe_array(obj)}; pass object layer 0")
            self.objectGuess = obj.astype(np.complex64)
        self.Y: np.ndarray | None = None  # noqa: N815
        if Y is not None:
            y = to_numpy(Y)
            if y.ndim == 4 and y.shape[-1] == 1:
                y = y[..., 0]
            self.Y = np.asarray(y, dtype=np.complex64) if np.iscomplexobj(y) else y
        self.norm_Y_I = norm_Y_I  # noqa: N815 - kept for reference scripts; unused here
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("input_units", units_used)
        self.to_scan()  # validate everything now (shapes, finiteness, counts), with one-line errors

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_coords_without_pc(
        cls, xcoords: Any, ycoords: Any, diff3d: Any, probeGuess: Any, scan_index: Any,  # noqa: N803
        objectGuess: Any = None, *, units: str = "auto",  # noqa: N803
    ) -> RawData:
        """A scan without position correction: the ``*_start`` coordinates equal the coordinates."""
        return cls(xcoords, ycoords, None, None, diff3d, probeGuess, scan_index, objectGuess, units=units)

    @classmethod
    def from_scan(cls, scan: ScanData) -> RawData:
        """Wrap a core :class:`~ptychopinn.data.scan.ScanData` (amplitudes already)."""
        start = scan.positions if scan.positions_start is None else scan.positions_start
        return cls(scan.positions[:, 0], scan.positions[:, 1], start[:, 0], start[:, 1], scan.diffraction,
                   scan.probe, scan.scan_index, scan.obj, scan.patches, metadata=dict(scan.metadata),
                   units="amplitude")

    @classmethod
    def from_file(cls, train_data_file_path: str | os.PathLike[str], *, units: str = "auto") -> RawData:
        """Read a scan NPZ (reference keys, or a ptychodus export: ``(1, N, N)`` probe, counts in
        ``diff3d``, extra keys such as ``bad_pixels`` ignored) with :func:`ptychopinn.io.npz.load_npz`."""
        from ptychopinn.io.npz import load_npz

        return cls.from_scan(load_npz(train_data_file_path, units=units))

    def to_file(self, file_path: str | os.PathLike[str]) -> None:
        """Write the scan as an NPZ (amplitudes under ``diff3d``; see :func:`ptychopinn.io.npz.save_npz`)."""
        from ptychopinn.io.npz import save_npz

        save_npz(file_path, self.to_scan())

    # ------------------------------------------------------------------ conversions
    def __len__(self) -> int:
        return int(self.diff3d.shape[0])

    @property
    def positions(self) -> np.ndarray:
        """``[M, 2]`` float64 ``(x, y)`` object pixels."""
        return np.stack([self.xcoords, self.ycoords], axis=1)

    @property
    def positions_start(self) -> np.ndarray:
        """``[M, 2]`` float64 nominal ``(x, y)`` object pixels."""
        return np.stack([self.xcoords_start, self.ycoords_start], axis=1)

    def to_scan(self) -> ScanData:
        """A validated core :class:`ScanData` built from the current attributes.

        ``objectGuess`` becomes ``ScanData.obj`` only when every position lies on it (ptychodus's object is
        an initial guess whose extent need not cover the scan); otherwise it is left out with a warning.
        """
        obj = self.objectGuess
        if obj is not None and not _inside(self.xcoords, self.ycoords, obj.shape):
            logger.warning("objectGuess %s does not contain every scan position; it is not used as the scan's "
                           "object (reconstructions still use its pixel grid)", obj.shape)
            obj = None
        patches = self.Y if self.Y is not None and np.iscomplexobj(self.Y) else None
        return ScanData(diffraction=self.diff3d, positions=self.positions, probe=self.probeGuess, obj=obj,
                        positions_start=self.positions_start, scan_index=self.scan_index, patches=patches,
                        metadata=dict(self.metadata))

    # ------------------------------------------------------------------ grouping
    def _groups(self, gridsize: int, k: int, nsamples: int, seed: int | None, enable_oversampling: bool) -> Groups:
        m, c = len(self), gridsize * gridsize
        if c == 1:
            if nsamples > m:
                logger.info("nsamples=%d > %d scan points: gridsize 1 gives one group per point, using %d",
                            nsamples, m, m)
            return group_positions(self.positions, 1)
        if nsamples <= m:
            # Each point seeds one group with its C-1 nearest neighbours: deterministic and complete.
            return group_positions(self.positions, gridsize, n_groups=None,
                                   neighbor_count=effective_neighbor_count(k, gridsize),
                                   seed=42 if seed is None else seed, sequential=True)
        if not enable_oversampling:
            logger.info("nsamples=%d > %d scan points: drawing several neighbour combinations per point", nsamples, m)
        return group_positions(self.positions, gridsize, n_groups=nsamples,
                               neighbor_count=effective_neighbor_count(k, gridsize),
                               seed=42 if seed is None else seed, enable_oversampling=True)

    def generate_grouped_data(
        self,
        N: int,  # noqa: N803 - reference argument name
        K: int = 4,  # noqa: N803
        nsamples: int = 1,
        dataset_path: str | None = None,
        seed: int | None = None,
        sequential_sampling: bool = False,
        gridsize: int | None = None,
        enable_oversampling: bool = False,
        neighbor_pool_size: int | None = None,
    ) -> dict[str, Any]:
        """Group the scan into samples of C = gridsize**2 neighbouring patterns (reference dict layout).

        Meaning of the arguments here:

        * ``nsamples`` is a lower bound on the number of groups B: **every scan point is always covered**.
          B = M (one group per scan point, the point itself as member 0 plus its C-1 nearest neighbours)
          when ``nsamples <= M``; for gridsize > 1 and ``nsamples > M``, B = ``nsamples`` with each point
          seeding one or more groups made of different neighbour combinations (drawn from the ``K``
          nearest, seeded by ``seed``). ptychodus's default ``nsamples=1`` therefore reconstructs the
          whole scan (the reference would sample one random group).
        * ``K``: neighbour pool for the extra combinations (``neighbor_pool_size`` overrides it).
        * ``gridsize``: None -> ``ptycho.params.cfg['gridsize']`` (1 if unset).
        * ``dataset_path`` and ``sequential_sampling`` are accepted for compatibility; grouping is
          deterministic here anyway.

        Returns a dict of numpy arrays (B groups, C channels, axis 2 of coordinates = (x, y) pixels):
        ``diffraction`` [B,N,N,C] float32 amplitude; ``X_full`` [B,N,N,C] float32 normalised so the mean
        per-pattern energy is (N/2)**2; ``Y`` [B,N,N,C] complex64 or None (only from the file's ``Y``);
        ``coords_nn`` [B,1,2,C] member positions; ``coords_offsets`` [B,1,2,1] group centres;
        ``coords_relative`` [B,1,2,C] = **-(member - centre)** (the reference sign); the same three with
        ``coords_start_`` prefixes from the ``*_start`` coordinates; ``nn_indices`` [B,C] int64;
        ``objectGuess``; ``input_scale`` (float, the normalisation factor); ``gridsize``; ``N``.
        """
        del dataset_path, sequential_sampling  # accepted for the reference signature only
        n_data = int(self.diff3d.shape[-1])
        if N != n_data:
            raise ConfigError(f"generate_grouped_data: N={N} but the diffraction patterns are {n_data}x{n_data}; "
                              f"pass N={n_data} (the pattern size)")
        g = gridsize if gridsize is not None else int(params.cfg.get("gridsize", 1) or 1)
        if not is_int(nsamples) or nsamples < 1:
            raise ConfigError(f"nsamples: expected a positive integer, found {nsamples!r}; pass e.g. 1")
        k = neighbor_pool_size if neighbor_pool_size is not None else K
        groups = self._groups(int(g), int(k), int(nsamples), seed, enable_oversampling)
        idx = groups.indices
        b, c = idx.shape
        a = input_scale(self.diff3d, idx)
        stack = self.diff3d[idx.reshape(-1)].reshape(b, c, N, N)
        diffraction = _to_bnnc(stack)
        x_full = (diffraction * np.float32(a)).astype(np.float32)
        y = None
        if self.Y is not None and np.iscomplexobj(self.Y):
            y = _to_bnnc(self.Y[idx.reshape(-1)].reshape(b, c, N, N)).astype(np.complex64)
        nn, offsets, relative = _coord_tensors(self.positions, idx)
        nn_s, offsets_s, relative_s = _coord_tensors(self.positions_start, idx)
        return {
            "diffraction": diffraction,
            "X_full": x_full,
            "Y": y,
            "coords_nn": nn,
            "coords_offsets": offsets,
            "coords_relative": relative,
            "coords_start_nn": nn_s,
            "coords_start_offsets": offsets_s,
            "coords_start_relative": relative_s,
            "nn_indices": idx,
            "objectGuess": self.objectGuess,
            "input_scale": float(a),
            "gridsize": int(g),
            "N": int(N),
        }
