"""The registry of file formats and the one entry point for reading scans: :func:`load_scan`.

A file's format is recognised from its content, never from its name: the container from the first bytes
(zip magic, HDF5 signature), then the layout (zip member names; HDF5 groups and datasets). Registered
formats, in the order they are tried:

==================  =========  ==========  ====================================================
name                container  kind        recognised by
==================  =========  ==========  ====================================================
``archive``         zip        archive     ``manifest.json`` (a model archive ``wts.h5.zip``)
``reconstruction``  zip        recon       an ``obj`` member and no diffraction
``tike``            zip, bz2   scan        ``data`` and ``scan`` members (tike's layout; bzip2: always)
``npz``             zip        scan        anything else in a zip (the NPZ scan contract)
``cxi``             hdf5       scan        an ``entry_1`` group (CXI 1.6)
``product``         hdf5       product     ``probe_position_x_m`` and ``object`` (ptychodus product)
``hdf5``            hdf5       scan        ``diffraction``/``diff3d``, ``xcoords``, ``ycoords`` at the root
==================  =========  ==========  ====================================================

Adding a format is one module plus one :class:`Format` entry in :data:`FORMATS`.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError, ProbeNotFoundError, PtychoInputError
from ptychopinn.io.files import container, regular_file

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Format:
    """One registered file format.

    Attributes:
        name: short name (``'npz'``, ``'cxi'``, ...).
        kind: ``'scan'``, ``'reconstruction'``, ``'product'`` or ``'archive'``.
        container: ``'zip'`` or ``'hdf5'``.
        matches: layout test; gets the zip member names (a set) or a file from ``ptychopinn.io.h5guard.open_h5``.
        description: for messages, e.g. ``'a ptychodus product file'``.
        load_scan: ``(path, units, *, probe, mapping, threshold, **options) -> ScanData`` for scan formats.
        load_object: ``path -> [H, W] complex64`` object (reconstructions, products, scans with a truth object).
        load_probe: ``path -> [N, N] complex64`` probe.
        compressed: outer compressions of the whole file the reader undoes itself (``'bz2'``); a compressed
            file is given to the first format that names its compression (its reader reports a wrong layout).
    """

    name: str
    kind: str
    container: str
    matches: Callable[[Any], bool]
    description: str
    load_scan: Callable[..., ScanData] | None = None
    load_object: Callable[[Path], np.ndarray] | None = None
    load_probe: Callable[[Path], np.ndarray] | None = None
    compressed: tuple[str, ...] = ()


# ------------------------------------------------------------------------- per-format small readers
def _npz_object(path: Path) -> np.ndarray:
    from ptychopinn.io.npz import NpzSource
    from ptychopinn.io.reconstruction import object_from_source

    with NpzSource(path) as src:
        return object_from_source(src)


def _npz_probe(path: Path) -> np.ndarray:
    from ptychopinn.io.npz import NpzSource

    with NpzSource(path) as src:
        return _probe_from_source(src, ("probeGuess", "probe"))


def _probe_from_source(src: Any, keys: tuple[str, ...]) -> np.ndarray:
    from ptychopinn.io.schema import probe_layout, read_small

    for key in keys:
        if key in src.keys():
            probe = probe_layout(read_small(src, key), src.path, key).astype(np.complex64)
            if not np.all(np.isfinite(probe)) or not np.any(probe):
                raise DataFormatError(f"{src.path}: '{key}' holds NaN/Inf or only zeros; not a usable probe")
            return probe
    raise ProbeNotFoundError(f"{src.path}: no probe found (looked for {list(keys)}); found keys {sorted(src.keys())}")


def _h5_object(path: Path) -> np.ndarray:
    from ptychopinn.io.hdf5 import H5Source, open_h5
    from ptychopinn.io.reconstruction import object_from_source

    with open_h5(path) as f:
        return object_from_source(H5Source(path, f))


def _h5_probe(path: Path) -> np.ndarray:
    from ptychopinn.io.hdf5 import H5Source, open_h5

    with open_h5(path) as f:
        return _probe_from_source(H5Source(path, f), ("probeGuess",))


def _product_object(path: Path) -> np.ndarray:
    from ptychopinn.io.product_h5 import load_product_h5

    return load_product_h5(path).obj


def _product_probe(path: Path) -> np.ndarray:
    from ptychopinn.io.product_h5 import load_product_h5

    return load_product_h5(path).probe


def _load_npz(path: Path, units: str, **kw: Any) -> ScanData:
    from ptychopinn.io.npz import load_npz

    return load_npz(path, units, **kw)


def _load_h5(path: Path, units: str, **kw: Any) -> ScanData:
    from ptychopinn.io.hdf5 import load_h5_scan

    return load_h5_scan(path, units, **kw)


def _load_cxi(path: Path, units: str, **kw: Any) -> ScanData:
    from ptychopinn.io.cxi import load_cxi

    return load_cxi(path, units, **kw)


def _cxi_probe(path: Path) -> np.ndarray:
    from ptychopinn.io.cxi import load_cxi_probe

    return load_cxi_probe(path)


def _load_tike(path: Path, units: str, **kw: Any) -> ScanData:
    from ptychopinn.io.tike import load_tike

    return load_tike(path, units, **kw)


def _tike_probe(path: Path) -> np.ndarray:
    from ptychopinn.io.tike import load_tike_probe

    return load_tike_probe(path)


def _is_tike(names: set[str]) -> bool:
    from ptychopinn.io.tike import is_tike

    return is_tike(names)


def _is_archive(names: set[str]) -> bool:
    return "manifest.json" in names or any(n.endswith((".dill", ".pt", ".safetensors")) for n in names)


def _is_reconstruction(names: set[str]) -> bool:
    from ptychopinn.io.reconstruction import is_reconstruction

    return is_reconstruction({n[:-4] for n in names if n.endswith(".npy")})


def _h5_has(f: Any, name: str) -> bool:
    from ptychopinn.io.h5guard import has

    return has(f, name)


def _is_h5_scan(f: Any) -> bool:
    from ptychopinn.io.hdf5 import is_h5_scan

    return is_h5_scan(f)


FORMATS: list[Format] = [
    Format("archive", "archive", "zip", _is_archive, "a model archive"),
    Format("reconstruction", "reconstruction", "zip", _is_reconstruction, "a reconstruction NPZ",
           load_object=_npz_object, load_probe=_npz_probe),
    Format("tike", "scan", "zip", _is_tike, "a tike scan", load_scan=_load_tike, load_probe=_tike_probe,
           compressed=("bz2",)),
    Format("npz", "scan", "zip", lambda names: True, "an NPZ scan", load_scan=_load_npz, load_object=_npz_object,
           load_probe=_npz_probe),
    Format("cxi", "scan", "hdf5", lambda f: _h5_has(f, "entry_1"), "a CXI file", load_scan=_load_cxi,
           load_probe=_cxi_probe),
    Format("product", "product", "hdf5", lambda f: _h5_has(f, "probe_position_x_m") and _h5_has(f, "object"),
           "a ptychodus product file", load_object=_product_object, load_probe=_product_probe),
    Format("hdf5", "scan", "hdf5", _is_h5_scan, "an HDF5 scan", load_scan=_load_h5, load_object=_h5_object,
           load_probe=_h5_probe),
]
"""Registered formats, tried in order within their container."""


_WHAT = {".npz": "NPZ file", ".h5": "HDF5 file", ".hdf5": "HDF5 file", ".cxi": "CXI file", ".bz2": "bzip2 file"}


def detect_format(path: str | os.PathLike[str]) -> Format:
    """The registered format of the file at ``path``, from its content (the name only words messages).

    Raises:
        FileNotFoundError: nothing there.
        DataFormatError: a directory, special file, ``.npy`` array, unknown container or unknown HDF5 layout.
    """
    p = regular_file(path, _WHAT.get(Path(path).suffix.lower(), "file"))
    kind = container(p)
    if kind == "zip":
        try:
            with zipfile.ZipFile(p) as zf:
                names = set(zf.namelist())
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError):
            names = set()  # damaged: the NPZ reader reports what is wrong with it
        return next(f for f in FORMATS if f.container == "zip" and f.matches(names))
    if kind == "hdf5":
        from ptychopinn.io.hdf5 import open_h5

        with open_h5(p) as h5:
            for fmt in FORMATS:
                if fmt.container == "hdf5" and fmt.matches(h5):
                    return fmt
            top = sorted(h5.keys())[:20]
        raise DataFormatError(
            f"{p} is an HDF5 file of no known layout (top-level names {top}); expected a scan with datasets "
            "diffraction|diff3d, xcoords, ycoords (and probeGuess) at the root, a CXI file (entry_1/data_1/data), "
            "or a ptychodus product file"
        )
    if kind == "bz2":
        return next(f for f in FORMATS if "bz2" in f.compressed)
    if kind == "npy":
        raise DataFormatError(f"{p} is a single .npy array, not an NPZ archive; save the scan with numpy.savez "
                              "and named keys (diff3d, probeGuess, xcoords, ycoords, ...)")
    with open(p, "rb") as fh:
        head = fh.read(8)
    raise DataFormatError(f"{p} is not a readable NPZ file nor an HDF5 file (first bytes {head!r}); expected a "
                          "scan, reconstruction, ptychodus product, CXI or tike (.npz.bz2) file: re-export or "
                          "re-copy it")


def load_scan(path: str | os.PathLike[str], units: str = "auto", *, probe: Any = None, mapping: str = "auto",
              threshold: int | None = None, **options: Any) -> ScanData:
    """Read a scan in any registered format into a validated :class:`ScanData`.

    Args:
        path: the file (NPZ, HDF5 with the NPZ keys, or CXI).
        units: ``'amplitude'``, ``'intensity'`` or ``'auto'`` (see :mod:`ptychopinn.io.units`).
        probe: where the probe comes from: None = the file's (an error when it has none), ``'auto'`` = the
            file's, else an estimate from the data, ``'estimate'`` = an estimate from the data (see
            :func:`ptychopinn.io.probe.estimate_probe`), a path = the probe of that file (NPZ scan or
            reconstruction, HDF5 scan, ptychodus product or CXI), or an ``[N, N]`` complex array.
            ``metadata['probe_source']`` records which was used.
        mapping: ``'auto'``, ``'never'`` or ``'require'`` (see :func:`ptychopinn.io.schema.scan_from_source`).
        threshold: bytes above which the stack stays on disk (default ``$PTYCHOPINN_MMAP_THRESHOLD`` or 1 GiB).
        options: how frames and positions are read, for every scan format (:mod:`ptychopinn.io.frames`):
            ``crop`` (even pixels), ``crop_centre`` ``(row, col)``, ``flip_x``, ``flip_y``.

    Raises:
        FileNotFoundError, ConfigError, DataFormatError (one line, starting with the path).
    """
    from ptychopinn.io.files import mmap_threshold
    from ptychopinn.io.frames import FrameOptions

    if threshold is None:
        threshold = mmap_threshold()  # a malformed environment value is reported before any reading
    frames = FrameOptions.of(options)
    fmt = detect_format(path)
    if fmt.load_scan is None:
        raise DataFormatError(f"{path} is {fmt.description}, not a scan; pass a scan file (NPZ, HDF5, CXI or tike) "
                              "with diffraction patterns and positions")
    kw: dict[str, Any] = {"mapping": mapping, "threshold": threshold, "frames": frames}
    source = "from the scan file"
    if isinstance(probe, (str, os.PathLike)) and str(probe) not in ("auto", "estimate"):
        probe_arr = load_probe(probe)
        kw["probe"], source = probe_arr, f"from {probe}"
    elif isinstance(probe, np.ndarray):
        kw["probe"], source = probe, "given"
    elif probe in ("auto", "estimate"):
        if probe == "estimate" or not _has_probe(fmt, Path(path)):
            from ptychopinn.io.probe import ESTIMATE_NOTE

            kw["probe"], source = "estimate", ESTIMATE_NOTE
    elif probe is not None:
        raise ConfigError(f"probe must be None, 'auto', 'estimate', a file path or an array, got {probe!r}")
    scan = fmt.load_scan(Path(path), units, **kw)
    scan.metadata["probe_source"] = source
    _log_mask(path, scan)
    return scan


def _log_mask(path: str | os.PathLike[str], scan: ScanData) -> None:
    n_pixels = scan.N * scan.N
    if scan.valid_pixels is None:
        logger.info("%s: no detector mask: all %d pixels of each pattern are used", path, n_pixels)
    else:
        masked = int(np.count_nonzero(~scan.valid_pixels))
        logger.info("%s: detector mask: %d of %d pixels of each pattern masked (left out of every likelihood)",
                    path, masked, n_pixels)


def _has_probe(fmt: Format, path: Path) -> bool:
    if fmt.load_probe is None:
        return False
    try:
        fmt.load_probe(path)
    except ProbeNotFoundError:
        return False
    return True


def load_probe(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``[N, N]`` complex64 probe of a file (``--probe FILE``): the ``probeGuess`` of an NPZ/HDF5 scan, the
    ``probe`` of a reconstruction NPZ, mode 0 of a ptychodus product, or the illumination of a CXI file.

    Raises:
        FileNotFoundError, DataFormatError (no probe in the file, or an unsupported kind of file).
    """
    fmt = detect_format(path)
    if fmt.load_probe is None:
        raise DataFormatError(f"{path} is {fmt.description}, which holds no probe; pass an NPZ/HDF5 scan, a "
                              "reconstruction, a ptychodus product or a CXI file with a probe")
    return fmt.load_probe(Path(path))


def load_object(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``[H, W]`` complex64 object of a file: a scan's ground truth ``objectGuess``, a reconstruction's
    ``obj`` or layer 0 of a ptychodus product.

    Raises:
        FileNotFoundError, DataFormatError.
    """
    fmt = detect_format(path)
    if fmt.load_object is None:
        raise DataFormatError(f"{path} is {fmt.description}, which holds no object; pass a scan with "
                              "objectGuess, a reconstruction NPZ or a ptychodus product file")
    return fmt.load_object(Path(path))


def describe_file(path: str | os.PathLike[str], **options: Any) -> tuple[str, dict[str, Any], bool]:
    """``(kind, description, valid)`` of any registered file, for ``ptychopinn info``.

    ``options``: for a scan, how its frames are read, as :func:`load_scan` (``crop``, ``crop_centre``,
    ``flip_x``, ``flip_y``).

    Raises only FileNotFoundError for a missing path; every other problem is reported in
    ``description['errors']`` with ``valid`` False.
    """
    from ptychopinn.io.frames import FRAME_FLAGS, FrameOptions

    p = Path(path)
    if options:
        try:
            FrameOptions.of(options)
        except PtychoInputError as exc:
            return "unknown", {"path": str(p), "errors": [str(exc)]}, False
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {p}")
    if p.is_dir() or (p.is_file() and p.name.endswith(".zip") and container(p) in ("zip", "unknown")):
        # a training directory, or a '.zip' (the model archive's name; a scan is never one): the archive
        # reader says what is wrong with a damaged one
        from ptychopinn.io.archive import read_manifest, resolve_archive_path

        return "archive", read_manifest(resolve_archive_path(p)), True
    try:
        fmt = detect_format(p)
    except (PtychoInputError, OSError) as exc:
        return "unknown", {"path": str(p), "errors": [str(exc)]}, False
    if options and fmt.load_scan is None:
        flags = ", ".join(FRAME_FLAGS[k] for k in options)
        return fmt.kind, {"format": fmt.name, "path": str(p), "errors": [
            f"{flags}: expected a scan file, found {fmt.description} ({p}); drop {flags}"]}, False
    try:
        if fmt.name == "archive":
            from ptychopinn.io.archive import read_manifest

            return "archive", read_manifest(p), True
        if fmt.name == "npz":
            from ptychopinn.io.npz import describe_npz

            d = describe_npz(p, **options)
            return "scan", {"format": "npz", **d}, bool(d["valid"])
        if fmt.name == "reconstruction":
            from ptychopinn.io.reconstruction import load_reconstruction, reconstruction_metadata

            obj, coverage, origin = load_reconstruction(p)
            return "reconstruction", {"format": "reconstruction", "object_shape": list(obj.shape),
                                      "origin_xy": list(origin), "covered_pixels": int(np.count_nonzero(coverage)),
                                      "metadata": reconstruction_metadata(p)}, True
        if fmt.name == "product":
            from ptychopinn.io.product_h5 import load_product_h5

            prod = load_product_h5(p)
            return "product", {"format": "product", "object_shape": list(prod.obj.shape),
                               "probe_shape": list(prod.probe.shape), "n_positions": int(prod.positions.shape[0]),
                               "pixel_size_m": list(prod.pixel_size_m),
                               "photon_energy_eV": prod.metadata.get("photon_energy_eV")}, True
        from ptychopinn.io.npz import describe_scan

        scan = load_scan(p, probe="auto", **options)
        return "scan", {"format": fmt.name, "path": str(p), "probe_source": scan.metadata.get("probe_source"),
                        **describe_scan(scan)}, True
    except (PtychoInputError, OSError) as exc:
        return fmt.kind, {"format": fmt.name, "path": str(p), "errors": [str(exc)]}, False
