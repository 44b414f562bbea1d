"""tike's ptychography arrays (``tike.ptycho``), e.g. its test data ``siemens-star-small.npz.bz2``.

Layout: an NPZ, plain or compressed as a whole with bzip2 (``.npz.bz2``), holding

* ``data``: ``[..., M, N, N]`` real photon counts, the far field **unshifted**: zero frequency at pixel
  ``(0, 0)`` (tike propagates with an unshifted orthonormal FFT);
* ``scan``: ``[..., M, 2]`` real ``(row, column)`` in object pixels of each probe window's minimum (top-left)
  corner: probe pixel ``(i, j)`` lies on object pixel ``scan + (i, j)``, its centre on ``scan + N/2``;
* ``probe``: ``[..., K, N, N]`` complex, K incoherent (shared) modes; tike writes ``(1, 1, 1, K, N, N)``.

Leading axes of length 1 (tike's views) are dropped; more than one view is refused. Recognised by content:
members ``data`` and ``scan`` (and none of the scan contract's ``diff3d``/``diffraction``/``xcoords``).

Converted to the core's contract: amplitude ``sqrt(data)`` with the zero frequency moved to ``(N/2, N/2)``
(``fftshift``; tike stores counts, which ``units='auto'`` takes from the layout); positions ``(x, y) =
(column, row) + N//2``, the object point under probe pixel ``N//2``, moved so that the smallest corner is
object pixel ``(0, 0)`` (``metadata['position_origin_px']`` is tike's ``(x, y)`` of our object pixel
``(0, 0)``); the probe's first mode. With several modes, ``metadata['probe_modes']`` and
``metadata['probe_mode_power']`` say how many and how the power is shared (one log line), and the scan carries
them all as ``ScanData.probe_modes`` ``[K, N, N]`` for mixed-state refinement (:func:`load_probe_modes` reads
them alone).

A bzip2 file is decompressed in a stream into an unlinked temporary file in ``$TMPDIR``, at most
:func:`ptychopinn.limits.memory_limit` bytes (a file that decompresses to more, a "bzip2 bomb", is refused
before that much is written). Arrays are read with ``allow_pickle=False`` semantics (a pickled member is
refused by name, never unpickled).
"""

from __future__ import annotations

import bz2
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ptychopinn.data.scan import ScanData
from ptychopinn.errors import DataFormatError, ProbeNotFoundError
from ptychopinn.io.files import check_allocation, container, regular_file
from ptychopinn.io.frames import FrameOptions
from ptychopinn.io.npz import NpzSource
from ptychopinn.io.schema import check_units, probe_layout, read_small, scan_from_source
from ptychopinn.limits import check_memory, open_regular

logger = logging.getLogger(__name__)

__all__ = ["TIKE_KEYS", "is_tike", "load_probe_modes", "load_tike", "load_tike_probe", "open_tike"]

TIKE_KEYS = ("data", "scan", "probe")
"""Members of a tike NPZ (``probe`` may be missing: then give one with ``--probe``)."""

_CONTRACT_KEYS = ("diff3d", "diffraction", "xcoords", "ycoords")
_CHUNK = 1 << 20


def is_tike(names: set[str]) -> bool:
    """True for the member names of a zip in the tike layout (module docstring)."""
    keys = {n[:-4] for n in names if n.endswith(".npy")}
    return {"data", "scan"} <= keys and not keys & set(_CONTRACT_KEYS)


def _unreadable(path: Path, exc: BaseException) -> DataFormatError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataFormatError(f"{path} is not a readable bzip2 file ({type(exc).__name__}: {text}); expected a tike NPZ "
                           "compressed with bzip2 (.npz.bz2): re-copy it, or decompress it (bunzip2) and pass the .npz")


def _decompress(path: Path) -> IO[bytes]:
    """The bzip2 stream(s) of ``path`` decompressed into an unlinked temporary file in ``$TMPDIR``, rewound.

    Raises:
        DataFormatError: not bzip2, truncated, or more than the memory limit once decompressed.
        OSError: the temporary file cannot be written (e.g. a full disk).
    """
    out = tempfile.TemporaryFile(prefix="ptychopinn-bz2-")
    try:
        total = 0
        with open_regular(path, "tike file", DataFormatError) as fh:
            dec = bz2.BZ2Decompressor()
            feed = b""
            while True:
                if dec.eof:
                    feed = dec.unused_data or fh.read(_CHUNK)
                    if not feed:
                        break  # the last stream ended with the file
                    dec = bz2.BZ2Decompressor()  # another stream follows (as `bzip2` itself accepts)
                if dec.needs_input and not feed:
                    feed = fh.read(_CHUNK)
                    if not feed:
                        raise _unreadable(path, EOFError("the bzip2 stream ends early"))
                try:
                    piece = dec.decompress(feed, max_length=_CHUNK)
                except (OSError, EOFError, ValueError) as exc:  # how bz2 reports damaged data
                    raise _unreadable(path, exc) from None
                feed = b""
                total += len(piece)
                check_memory(total, f"{path}: decompressing its bzip2 content",
                             "check the file: a small file that decompresses to this much is malformed",
                             error=DataFormatError)
                out.write(piece)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


@contextlib.contextmanager
def _npz(path: str | os.PathLike[str]) -> Iterator[NpzSource]:
    """The NPZ of a tike file (plain or bzip2-compressed) as an :class:`NpzSource` naming ``path``."""
    p = regular_file(path, "tike file")
    if container(p) != "bz2":
        with NpzSource(p) as src:
            yield src
        return
    raw = _decompress(p)
    try:
        if container_of(raw) != "zip":
            raise DataFormatError(f"{p}: the bzip2 content is not an NPZ (zip) archive; expected a tike NPZ "
                                  "compressed with bzip2 (.npz.bz2)")
        with NpzSource(p, fileobj=raw) as src:
            yield src
    finally:
        raw.close()


def container_of(fh: IO[bytes]) -> str:
    """``'zip'`` when the open file ``fh`` starts with a zip magic (rewound afterwards), else ``'unknown'``."""
    from ptychopinn.io.files import ZIP_MAGIC

    head = fh.read(4)
    fh.seek(0)
    return "zip" if head in ZIP_MAGIC else "unknown"


def _squeezed(src: NpzSource, key: str, rank: int, what: str) -> tuple[int, ...]:
    """The shape of ``key`` without its leading axes of length 1, which must leave ``rank`` axes."""
    if key not in src.keys():
        raise DataFormatError(f"{src.path}: tike file lacks '{key}' ({what}); found keys {sorted(src.keys())}")
    shape = src.shape(key)
    lead = shape[:-rank] if len(shape) >= rank else ()
    if len(shape) < rank or any(d != 1 for d in lead):
        raise DataFormatError(f"{src.path}: tike '{key}' must be {what} (leading axes of length 1 allowed), found "
                              f"shape {shape}; store one view")
    return tuple(shape[-rank:])


def _check_real(src: NpzSource, key: str) -> None:
    dtype = src.dtype(key)
    if dtype.kind not in "iuf":
        raise DataFormatError(f"{src.path}: tike '{key}' must be real numbers, found dtype {dtype} shape "
                              f"{src.shape(key)}")


class TikeSource:
    """A tike NPZ (:class:`NpzSource`) as an :class:`~ptychopinn.io.schema.ArraySource` with the scan keys:
    ``diffraction`` (``data`` moved to the centred frame), ``xcoords``/``ycoords`` and ``probeGuess``."""

    def __init__(self, src: NpzSource):
        self.src = src
        self.path = src.path
        m, n, n2 = _squeezed(src, "data", 3, "[..., M, N, N] photon counts")
        _check_real(src, "data")
        if m == 0:
            raise DataFormatError(f"{self.path}: tike 'data' holds no frames (shape {src.shape('data')}); expected "
                                  "[..., M, N, N] with at least one frame")
        if n != n2:
            raise DataFormatError(f"{self.path}: tike 'data' frames are {n} x {n2}; expected square N x N frames")
        src.view("data", (m, n, n2))
        m_scan, two = _squeezed(src, "scan", 2, "[..., M, 2] (row, column) corners")
        _check_real(src, "scan")
        if two != 2 or m_scan != m:
            raise DataFormatError(f"{self.path}: tike 'scan' is {src.shape('scan')} but 'data' holds {m} frames; "
                                  f"expected [..., {m}, 2] (row, column) per frame")
        self.m, self.n = m, n
        self.modes = 0
        if "probe" in src.keys():
            shape = src.shape("probe")
            if len(shape) < 2 or shape[-2:] != (n, n) or any(d != 1 for d in shape[:-3]):
                raise DataFormatError(f"{self.path}: tike 'probe' must be [..., K, {n}, {n}] (K modes, leading axes "
                                      f"of length 1), found shape {shape}; its frames must match the data's")
            self.modes = shape[-3] if len(shape) >= 3 else 1
            if self.modes < 1:
                raise DataFormatError(f"{self.path}: tike 'probe' holds no mode (shape {shape})")
        corners = read_small(src, "scan").reshape(m, 2).astype(np.float64)
        if not np.all(np.isfinite(corners)):
            raise DataFormatError(f"{self.path}: tike 'scan' contains NaN/Inf; repair the positions")
        origin = corners.min(axis=0)
        # (row, col) of the top-left corner -> (x, y) of the point under probe pixel N//2
        self.positions = (corners - origin)[:, ::-1] + n // 2
        self.origin_xy = (float(origin[1]), float(origin[0]))

    def probe_modes(self) -> np.ndarray:
        """All probe modes ``[K, N, N]`` complex64."""
        if self.modes == 0:
            raise ProbeNotFoundError(f"{self.path}: tike file has no 'probe'; no probe found")
        check_allocation(self.path, "'probe'", (self.modes, self.n, self.n), 8)
        raw = np.asarray(self.src.read("probe"))
        if raw.dtype.kind not in "iufc":
            raise DataFormatError(f"{self.path}: tike 'probe' must be complex numbers, found dtype {raw.dtype}")
        return raw.reshape(self.modes, self.n, self.n).astype(np.complex64)

    # ------------------------------------------------------------------ ArraySource
    def keys(self) -> set[str]:
        return {"diffraction", "xcoords", "ycoords", *(("probeGuess",) if self.modes else ())}

    def shape(self, key: str) -> tuple[int, ...]:
        if key == "diffraction":
            return (self.m, self.n, self.n)
        if key == "probeGuess":
            return (self.n, self.n)
        return (self.m,)

    def dtype(self, key: str) -> np.dtype:
        if key == "diffraction":
            return self.src.dtype("data")
        return np.dtype(np.complex64 if key == "probeGuess" else np.float64)

    def read(self, key: str) -> np.ndarray:
        if key == "diffraction":
            data = np.asarray(self.src.read("data")).reshape(self.m, self.n, self.n)
            return np.fft.fftshift(data, axes=(-2, -1))
        if key == "probeGuess":
            return probe_layout(self.probe_modes()[0], self.path, "probe")
        return self.positions[:, 0 if key == "xcoords" else 1].copy()

    def batches(self, key: str, rows: int) -> Iterator[np.ndarray]:
        if key != "diffraction":
            yield self.read(key)
            return
        for block in self.src.batches("data", rows):
            yield np.fft.fftshift(block, axes=(-2, -1))  # zero frequency from (0, 0) to (N/2, N/2)

    def mapped(self, key: str, strict: bool = False) -> np.ndarray | None:
        if strict:
            raise DataFormatError(f"{self.path}: tike frames are stored unshifted and cannot be memory-mapped; "
                                  "convert the scan once (load_scan then save_npz) and map that file")
        return None

    def metadata_text(self) -> str | None:
        return None


@contextlib.contextmanager
def open_tike(path: str | os.PathLike[str]) -> Iterator[TikeSource]:
    """The tike file at ``path`` (plain or bzip2-compressed NPZ) as a :class:`TikeSource`."""
    with _npz(path) as src:
        yield TikeSource(src)


def load_tike(path: str | os.PathLike[str], units: str = "auto", *, probe: np.ndarray | str | None = None,
              mapping: str = "auto", threshold: int | None = None, frames: FrameOptions | None = None) -> ScanData:
    """Read a tike file (module docstring) into a validated :class:`ScanData`.

    Args:
        path: ``.npz`` or ``.npz.bz2`` in the tike layout.
        units, probe, mapping, threshold, frames: as :func:`ptychopinn.io.registry.load_scan` (``'auto'``
            units: counts, as tike stores them).

    Raises:
        FileNotFoundError, ConfigError, DataFormatError (one line naming ``path``).
    """
    check_units(units)
    with open_tike(path) as src:
        extra: dict[str, Any] = {"source_format": "tike", "diffraction_units": "intensity",
                                 "position_origin_px": list(src.origin_xy)}
        modes = None
        if src.modes > 1 and probe is None:
            modes = src.probe_modes()
            power = np.sum(np.abs(modes.astype(np.complex128)) ** 2, axis=(1, 2))
            share = power / power.sum() if power.sum() > 0 else power
            extra.update(probe_modes=int(src.modes), probe_mode_power=[round(float(v), 4) for v in share])
            logger.info("%s: the probe has %d incoherent modes (power shares %s); refinement uses them all "
                        "(--probe-modes K to choose how many)", path, src.modes, ", ".join(f"{v:.3f}" for v in share))
        return scan_from_source(src, units, probe=probe, mapping=mapping, threshold=threshold, extra_metadata=extra,
                                frames=frames, probe_modes=modes)


def load_tike_probe(path: str | os.PathLike[str]) -> np.ndarray:
    """The first probe mode ``[N, N]`` complex64 of a tike file (``--probe FILE``).

    Raises:
        ProbeNotFoundError: the file has no probe; DataFormatError: a malformed one.
    """
    modes = load_probe_modes(path)
    probe = modes[0]
    if not np.all(np.isfinite(probe)) or not np.any(probe):
        raise DataFormatError(f"{path}: tike 'probe' holds NaN/Inf or only zeros; not a usable probe")
    return probe


def load_probe_modes(path: str | os.PathLike[str]) -> np.ndarray:
    """Every probe mode ``[K, N, N]`` complex64 of a tike file, strongest first as tike stores them."""
    with open_tike(path) as src:
        return src.probe_modes()
