"""Hostile HDF5 inputs: links, external storage, virtual datasets, compression filters, corrupt chunks, declared
sizes, undecodable text and other malformed metadata, each with the error it must produce (or None: accepted).

Each :class:`Case` builds its input inside an empty folder (plus any files it links to) and names how it is
read: ``scan`` (``load_scan``; ``ptychopinn info FILE`` and ``ptychopinn refine FILE --flat``), ``probe``
(``load_probe``; ``info FILE`` and ``refine SCAN --flat --probe FILE`` with a valid scan) or ``recon``
(``reconstruction_metadata``; ``info FILE``).

Run as a script (``python hdf5_corpus.py SPEC RESULTS``) it is the driver the tests start in a child process:
it runs the command lines of every case named in SPEC (JSON) and writes their exit codes and output to
RESULTS as it goes, so a decoder crash (a regression) ends that child, never pytest.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

M, N = 12, 16
EV_J = 1.602176634e-19
SMALL_LIMIT = "64M"  # PTYCHOPINN_MAX_MEMORY of the declared-size cases: the tiny valid parts fit easily
DATA_PATH = "entry_1/data_1/data"


@dataclass(frozen=True)
class Case:
    id: str
    category: str  # links | storage | filters | chunks | memory | text
    make: Callable[[Path], Path]
    fragment: str | None  # None: accepted (exit 0, a valid result)
    role: str = "scan"  # scan | probe | recon
    crash: bool = False  # decoding it crashed or hung the process once: API checked in the child only
    small_memory: bool = False  # run under PTYCHOPINN_MAX_MEMORY=SMALL_LIMIT
    options: tuple[str, ...] = ()  # extra CLI options of `refine` (e.g. a CXI's probe)
    api_kwargs: dict[str, Any] = field(default_factory=dict)
    info_fragment: str | None = None  # when `info` (which takes no CXI options) meets another limit first


# ------------------------------------------------------------------------------------------- valid files
def frames() -> np.ndarray:
    return np.random.default_rng(0).poisson(30.0, (M, N, N)).astype(np.float32)


def h5_scan(path: Path, edit: Callable[[h5py.File], None] | None = None, **create: Any) -> Path:
    """A valid HDF5 scan (``diffraction`` [M, N, N] float32 counts-like, positions, probe), then ``edit``."""
    with h5py.File(path, "w", **create) as f:
        f.create_dataset("diffraction", data=frames(), chunks=(4, N, N), compression="gzip")
        f["xcoords"], f["ycoords"] = np.linspace(9, 20, M), np.linspace(9, 20, M)
        f["probeGuess"] = np.ones((N, N), np.complex64)
        if edit is not None:
            edit(f)
    return path


def cxi(path: Path, edit: Callable[[h5py.File], None] | None = None, data: bool = True) -> Path:
    """A valid CXI file without a probe (``refine`` gets ``--probe estimate``), then ``edit``."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        if data:
            f[DATA_PATH] = frames()
        f["entry_1/sample_1/geometry_1/translation"] = np.c_[rng.uniform(-1e-6, 1e-6, (M, 2)), np.zeros(M)]
        f["entry_1/instrument_1/source_1/energy"] = 8000 * EV_J
        f["entry_1/instrument_1/detector_1/distance"] = 1.5
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/instrument_1/detector_1/y_pixel_size"] = 75e-6
        if edit is not None:
            edit(f)
    return path


def product(path: Path, edit: Callable[[h5py.File], None] | None = None) -> Path:
    from ptychopinn.io.product_h5 import save_product_h5

    save_product_h5(path, np.ones((40, 40), np.complex64), np.full((M, 2), 20.0), np.ones((N, N), np.complex64),
                    metadata={"photon_energy_eV": 8000.0, "note": "x"})
    if edit is not None:
        with h5py.File(path, "a") as f:
            edit(f)
    return path


def scan_npz(path: Path, metadata: str | None = None) -> Path:
    arrays: dict[str, Any] = {"diff3d": np.sqrt(frames()), "probeGuess": np.ones((N, N), np.complex64),
                              "xcoords": np.linspace(9, 20, M), "ycoords": np.linspace(9, 20, M)}
    if metadata is not None:
        arrays["_metadata"] = np.array(metadata)
    np.savez(path, **arrays)
    return path


def recon_npz(path: Path, metadata: str) -> Path:
    np.savez(path, obj=np.ones((40, 40), np.complex64), coverage=np.ones((40, 40), np.float32),
             origin_xy=np.zeros(2), positions=np.full((M, 2), 20.0), _metadata=np.array(metadata))
    return path


# ------------------------------------------------------------------------------------------- edits
def replace(key: str, value: Any) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        if key in f:
            del f[key]
        f[key] = value
    return edit


def fifo(folder: Path, name: str = "pipe") -> Path:
    path = folder / name
    os.mkfifo(path)
    return path


def external_frames(target: str, dtype: Any = np.uint8, offset: int = 0) -> Callable[[h5py.File], None]:
    """``diffraction`` (or the CXI frames) stored as external raw bytes in ``target``."""
    def edit(f: h5py.File) -> None:
        key = DATA_PATH if "entry_1" in f else "diffraction"
        del f[key]
        nbytes = M * N * N * np.dtype(dtype).itemsize
        f.create_dataset(key, shape=(M, N, N), dtype=dtype, external=[(target, offset, nbytes)])
    return edit


def virtual_frames(source_file: str, source_name: str = "frames") -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f["diffraction"]
        layout = h5py.VirtualLayout((M, N, N), np.float32)
        layout[:] = h5py.VirtualSource(source_file, source_name, shape=(M, N, N))
        f.create_virtual_dataset("diffraction", layout, fillvalue=1.0)
    return edit


def source_file(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["frames"] = frames()
    return path


def link_probe(link: Any) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f["probeGuess"]
        f["probeGuess"] = link
    return edit


def probe_file(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["probe"] = np.full((N, N), 2.0, np.complex64)
    return path


def filtered(filter_id: int, options: tuple[int, ...] = ()) -> Callable[[h5py.File], None]:
    """``diffraction`` declared compressed with HDF5 filter ``filter_id`` (its plugin need not be present;
    ``options`` are hdf5plugin's defaults, which its filter checks when it is registered), chunks stored raw."""
    def edit(f: h5py.File) -> None:
        del f["diffraction"]
        d = f.create_dataset("diffraction", shape=(M, N, N), dtype=np.float32, chunks=(4, N, N),
                             compression=filter_id, compression_opts=options, allow_unknown_filter=True)
        for lo in range(0, M, 4):
            d.id.write_direct_chunk((lo, 0, 0), frames()[lo:lo + 4].tobytes())
    return edit


def plugin_chunks(kind: str, corrupt: Callable[[bytes], bytes], chunk: int = 0) -> Callable[[h5py.File], None]:
    """``diffraction`` compressed with an hdf5plugin filter, then chunk number ``chunk`` replaced by
    ``corrupt(its stored bytes)``."""
    def edit(f: h5py.File) -> None:
        import hdf5plugin

        opts = {"bitshuffle-lz4": lambda: hdf5plugin.Bitshuffle(cname="lz4"),
                "bitshuffle-zstd": lambda: hdf5plugin.Bitshuffle(cname="zstd"), "lz4": hdf5plugin.LZ4,
                "blosc": hdf5plugin.Blosc, "zstd": hdf5plugin.Zstd}[kind]()
        del f["diffraction"]
        d = f.create_dataset("diffraction", data=frames(), chunks=(4, N, N), **opts)
        coord = (4 * chunk, 0, 0)
        mask, raw = d.id.read_direct_chunk(coord)
        d.id.write_direct_chunk(coord, corrupt(bytes(raw)), mask)
    return edit


def truncate(raw: bytes) -> bytes:
    return raw[:len(raw) // 3]


def header_size(size: int, where: int = 0, fmt: str = ">Q") -> Callable[[bytes], bytes]:
    def corrupt(raw: bytes) -> bytes:
        n = struct.calcsize(fmt)
        return raw[:where] + struct.pack(fmt, size) + raw[where + n:]
    return corrupt


def garbage_after(keep: int) -> Callable[[bytes], bytes]:
    def corrupt(raw: bytes) -> bytes:
        return raw[:keep] + np.random.default_rng(1).integers(0, 256, len(raw) - keep, np.uint8).tobytes()
    return corrupt


def gzip_bomb(f: h5py.File) -> None:
    """A 16 KiB chunk whose deflate stream inflates to 400 MiB (about 400 KiB in the file)."""
    del f["diffraction"]
    d = f.create_dataset("diffraction", shape=(M, N, N), dtype=np.float32, chunks=(M, N, N), compression="gzip")
    z = zlib.compressobj(1)
    block = bytes(8 << 20)
    d.id.write_direct_chunk((0, 0, 0), b"".join(z.compress(block) for _ in range(50)) + z.flush())


def bad_utf8_attr(key: str, obj: str = "/", fixed: bool = True) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        dtype = h5py.string_dtype("utf-8", 4) if fixed else h5py.string_dtype("utf-8")
        f[obj].attrs.create(key, b"\xff\xfe\xfd\xfc", dtype=dtype)
    return edit


NESTED = '{"a": ' + "[" * 50000 + "]" * 50000 + "}"
DEEP = '{"a": ' + "[" * 40 + "]" * 40 + "}"  # parses, but deeper than the metadata limit
BIG_INT = '{"pixel_size_m": ' + "9" * 400 + "}"
SURROGATE = '{"name": "\\udcff"}'


def user_block(size: int, head: bytes = b"") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = h5_scan(d / "scan.h5", userblock_size=size)
        if head:
            with open(path, "r+b") as fh:
                fh.write(head)
        return path
    return make


def symlink_outside(d: Path) -> Path:
    outside = d.parent / "elsewhere"
    outside.mkdir()
    probe_file(outside / "probe.h5")
    (d / "probe.h5").symlink_to(outside / "probe.h5")
    return h5_scan(d / "scan.h5", link_probe(h5py.ExternalLink("probe.h5", "/probe")))


def outside_folder(d: Path) -> Path:
    outside = d.parent / "elsewhere"
    outside.mkdir()
    probe_file(outside / "probe.h5")
    return h5_scan(d / "scan.h5", link_probe(h5py.ExternalLink("../elsewhere/probe.h5", "/probe")))


def external_raw_inside(d: Path) -> Path:
    (d / "frames.bin").write_bytes(frames().astype(">f4").tobytes())
    return h5_scan(d / "scan.h5", external_frames("frames.bin", ">f4"))


def external_raw_short(d: Path) -> Path:
    (d / "frames.bin").write_bytes(bytes(100))
    return h5_scan(d / "scan.h5", external_frames("frames.bin"))


def vds_outside(d: Path) -> Path:
    outside = d.parent / "elsewhere"
    outside.mkdir()
    source_file(outside / "src.h5")
    return h5_scan(d / "scan.h5", virtual_frames(str(outside / "src.h5")))


def vds_inside(d: Path) -> Path:
    source_file(d / "src.h5")
    return h5_scan(d / "scan.h5", virtual_frames("src.h5"))


def vds_fifo(d: Path) -> Path:
    fifo(d, "src.h5")
    return h5_scan(d / "scan.h5", virtual_frames("src.h5"))


def vds_no_dataset(d: Path) -> Path:
    source_file(d / "src.h5")
    return h5_scan(d / "scan.h5", virtual_frames("src.h5", "nothing"))


def vds_same_file(d: Path) -> Path:
    def edit(f: h5py.File) -> None:
        f["frames"] = frames()
        virtual_frames(".", "/frames")(f)
    return h5_scan(d / "scan.h5", edit)


def loop(f: h5py.File) -> None:
    link_probe(h5py.SoftLink("/a"))(f)
    f["a"] = h5py.SoftLink("/b")
    f["b"] = h5py.SoftLink("/probeGuess")


def _scan(edit: Callable[[h5py.File], None], name: str = "scan.h5") -> Callable[[Path], Path]:
    return lambda d: h5_scan(d / name, edit)


def _cxi(edit: Callable[[h5py.File], None] | None, data: bool = True) -> Callable[[Path], Path]:
    return lambda d: cxi(d / "scan.cxi", edit, data)


def _product(edit: Callable[[h5py.File], None]) -> Callable[[Path], Path]:
    return lambda d: product(d / "product.h5", edit)


def _with_fifo_link(d: Path) -> Path:
    return h5_scan(d / "scan.h5", link_probe(h5py.ExternalLink(str(fifo(d)), "/x")))


def _with_fifo_storage(d: Path) -> Path:
    return h5_scan(d / "scan.h5", external_frames(str(fifo(d))))


def _probe_inside(d: Path) -> Path:
    probe_file(d / "probe.h5")
    return h5_scan(d / "scan.h5", link_probe(h5py.ExternalLink("probe.h5", "/probe")))


def _self_link(d: Path) -> Path:
    return h5_scan(d / "scan.h5", link_probe(h5py.ExternalLink("scan.h5", "/probeGuess")))


def _declare(key: str, shape: tuple[int, ...], dtype: Any, chunks: Any = True,
             **kw: Any) -> Callable[[h5py.File], None]:
    """Replace ``key`` by a dataset that declares ``shape`` but stores nothing (a few bytes in the file)."""
    def edit(f: h5py.File) -> None:
        if key in f:
            del f[key]
        f.create_dataset(key, shape=shape, dtype=dtype, chunks=chunks, **kw)
    return edit


def _chunk_larger_than_stack(f: h5py.File) -> None:
    """A 4 GiB chunk (never written: the guard must refuse it from the declaration) over a 12 KiB stack."""
    del f["diffraction"]
    f.create_dataset("diffraction", shape=(M, N, N), maxshape=(None, N, N), dtype=np.float32, chunks=(1 << 22, N, N),
                     compression="gzip")


def _huge_cxi(f: h5py.File) -> None:
    """CXI frames [10**8, N, N] (never written), translations of that length."""
    del f[DATA_PATH]
    f.create_dataset(DATA_PATH, shape=(10**8, N, N), dtype=np.float32, chunks=(1, N, N))
    _declare("entry_1/sample_1/geometry_1/translation", (10**8, 3), np.float64, (1024, 3))(f)


def _big_frames(f: h5py.File) -> None:
    del f[DATA_PATH]
    f.create_dataset(DATA_PATH, shape=(M, 8192, 8192), dtype=np.float32, chunks=(1, 1024, 1024))
    for key in ("x_pixel_size", "y_pixel_size"):
        replace(f"entry_1/instrument_1/detector_1/{key}", 75e-6)(f)


def _mask_for(shape: tuple[int, int]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[DATA_PATH]
        f.create_dataset(DATA_PATH, shape=(M, *shape), dtype=np.float32, chunks=(1, 256, 256))
        _declare("entry_1/instrument_1/detector_1/mask", shape, np.uint32, (256, 256))(f)
    return edit


CASES: list[Case] = [
    # ---- links
    Case("elink-etc-passwd", "links", _scan(link_probe(h5py.ExternalLink("/etc/passwd", "/x"))),
         "outside the input's folder"),
    Case("elink-dev-zero", "links", _scan(link_probe(h5py.ExternalLink("/dev/zero", "/x"))),
         "outside the input's folder"),
    Case("elink-fifo-inside", "links", _with_fifo_link, "which is a named pipe"),
    Case("elink-outside-folder", "links", outside_folder, "outside the input's folder"),
    Case("elink-symlink-escape", "links", symlink_outside, "outside the input's folder"),
    Case("elink-missing-file", "links", _scan(link_probe(h5py.ExternalLink("gone.h5", "/probe"))),
         "which does not exist"),
    Case("elink-self-loop", "links", _self_link, "a link loop"),
    Case("elink-inside-accepted", "links", _probe_inside, None),
    Case("elink-cxi-frames-passwd", "links",
         _cxi(lambda f: f.__setitem__(DATA_PATH, h5py.ExternalLink("/etc/passwd", "/d")), data=False),
         "outside the input's folder", options=("--probe", "estimate")),
    Case("elink-product-probe-dev-zero", "links",
         _product(lambda f: (f.__delitem__("probe"), f.__setitem__("probe", h5py.ExternalLink("/dev/zero", "/p")))),
         "outside the input's folder", role="probe"),
    Case("softlink-loop", "links", _scan(loop), "a link loop"),
    Case("softlink-self", "links", _scan(link_probe(h5py.SoftLink("/probeGuess"))), "a link loop"),
    Case("softlink-dangling", "links", _scan(link_probe(h5py.SoftLink("/nothing"))),
         "'probeGuess' leads to no dataset"),
    Case("softlink-loop-cxi-frames", "links", _cxi(lambda f: f.__setitem__(DATA_PATH, h5py.SoftLink(f"/{DATA_PATH}")),
                                                   data=False), "a link loop", options=("--probe", "estimate")),
    # ---- external raw storage and virtual datasets
    Case("storage-etc-passwd", "storage", _scan(external_frames("/etc/passwd")), "outside the input's folder"),
    Case("storage-cxi-dev-urandom", "storage", _cxi(external_frames("/dev/urandom")), "outside the input's folder",
         options=("--probe", "estimate")),
    Case("storage-cxi-mask-dev-zero", "storage", _cxi(lambda f: f.create_dataset(
        "entry_1/instrument_1/detector_1/mask", shape=(N, N), dtype=np.uint8, external=[("/dev/zero", 0, N * N)])),
         "outside the input's folder", options=("--probe", "estimate")),
    Case("storage-fifo-inside", "storage", _with_fifo_storage, "which is a named pipe"),
    Case("storage-relative-escape", "storage", _scan(external_frames("../frames.bin")), "outside the input's folder"),
    Case("storage-short-file", "storage", external_raw_short, "the external file is truncated"),
    Case("storage-inside-accepted", "storage", external_raw_inside, None),
    Case("vds-missing-source", "storage", _scan(virtual_frames("missing.h5")), "which does not exist"),
    Case("vds-source-outside", "storage", vds_outside, "outside the input's folder"),
    Case("vds-source-fifo", "storage", vds_fifo, "which is a named pipe"),
    Case("vds-source-dataset-missing", "storage", vds_no_dataset, "HDF5 would read fill values"),
    Case("vds-inside-accepted", "storage", vds_inside, None),
    Case("vds-same-file-accepted", "storage", vds_same_file, None),
    # ---- filters outside the supported list
    Case("filter-bzip2", "filters", _scan(filtered(307, (9,))), "filter 307 (bzip2)"),
    Case("filter-sz3", "filters", _scan(filtered(32024, (0, 1069128089, 2576980378, 0, 0, 0, 0, 0, 0))),
         "filter 32024 (SZ3)"),
    Case("filter-sperr", "filters", _scan(filtered(32028, (269484032, 0))), "filter 32028 (SPERR)"),
    Case("filter-zfp", "filters", _scan(filtered(32013)), "filter 32013 (ZFP)"),
    Case("filter-blosc2", "filters", _scan(filtered(32026, (0, 0, 0, 0, 5, 1, 0))), "filter 32026 (Blosc2)"),
    Case("filter-unknown-id", "filters", _scan(filtered(40000)), "filter 40000"),
    Case("filter-scaleoffset", "filters",
         _scan(lambda f: (f.__delitem__("diffraction"), f.create_dataset(
             "diffraction", data=frames(), chunks=(4, N, N), scaleoffset=2))), "(scaleoffset)"),
    Case("filter-sz3-product-object", "filters",
         _product(lambda f: (f.__delitem__("object"), f.create_dataset(
             "object", shape=(1, 40, 40), dtype=np.complex64, chunks=(1, 40, 40), compression=32024,
             allow_unknown_filter=True))), "filter 32024 (SZ3)", role="probe"),
    # ---- corrupt chunks of supported filters (decoders that crashed, spun or returned garbage)
    Case("bitshuffle-lz4-header-3gib", "chunks", _scan(plugin_chunks("bitshuffle-lz4", header_size(3 << 30))),
         "declares 3221225472 decoded bytes in its bitshuffle header", crash=True),
    Case("bitshuffle-lz4-block-table-garbage", "chunks", _scan(plugin_chunks("bitshuffle-lz4", garbage_after(12))),
         "past the end of the chunk", crash=True),
    Case("bitshuffle-lz4-truncated", "chunks", _scan(plugin_chunks("bitshuffle-lz4", truncate)), "(truncated)",
         crash=True),
    Case("bitshuffle-lz4-third-chunk", "chunks",
         _scan(plugin_chunks("bitshuffle-lz4", header_size(3 << 30), chunk=2)), "chunk at (8, 0, 0)", crash=True),
    Case("bitshuffle-zstd-garbage", "chunks", _scan(plugin_chunks("bitshuffle-zstd", garbage_after(12))),
         "past the end of the chunk", crash=True),
    Case("lz4-header-3gib", "chunks", _scan(plugin_chunks("lz4", header_size(3 << 30))),
         "declares 3221225472 decoded bytes in its LZ4 header", crash=True),
    Case("blosc-header-3gib", "chunks", _scan(plugin_chunks("blosc", header_size(3 << 30, 4, "<I"))),
         "declares 3221225472 decoded bytes in its Blosc header", crash=True),
    Case("bitshuffle-zstd-accepted", "chunks", _scan(plugin_chunks("bitshuffle-zstd", bytes)), None),
    Case("blosc-accepted", "chunks", _scan(plugin_chunks("blosc", bytes)), None),
    Case("zstd-truncated", "chunks", _scan(plugin_chunks("zstd", truncate)), "(truncated)", crash=True),
    Case("gzip-bomb-chunk", "chunks", _scan(gzip_bomb), "cannot be decoded", crash=True),
    # ---- declared sizes above the memory limit
    Case("size-chunk-larger-than-stack", "memory", _scan(_chunk_larger_than_stack), "chunks (4194304, 16, 16)",
         small_memory=True),
    Case("size-cxi-translation", "memory", _cxi(_huge_cxi), "translation' (shape (100000000, 3)",
         small_memory=True, options=("--probe", "estimate")),
    Case("size-cxi-mask", "memory", _cxi(_mask_for((8192, 8192))), "mask' (shape (8192, 8192)", small_memory=True,
         options=("--probe", "estimate")),
    Case("size-cxi-probe", "memory", _cxi(_declare("entry_1/instrument_1/source_1/illumination", (100000, N, N),
                                                   np.complex64)), "(100000, 16, 16)", small_memory=True),
    Case("size-crop-search", "memory", _cxi(_big_frames), "the zero-order search", small_memory=True,
         options=("--probe", "estimate", "--crop", "16"), api_kwargs={"crop": 16},
         info_fragment="'entry_1/data_1/data' (shape (12, 8192, 8192)"),
    Case("size-h5-metadata-dataset", "memory", _scan(_declare("_metadata", (), "S200000000", None)),
         "'_metadata' (shape ()", small_memory=True),
    Case("size-product-object", "memory", _product(_declare("object", (1, 20000, 20000), np.complex64)),
         "'object' (shape (1, 20000, 20000)", role="probe", small_memory=True),
    Case("size-product-probe", "memory", _product(_declare("probe", (100000, 1, N, N), np.complex64)),
         "'probe' (shape (100000, 1, 16, 16)", role="probe", small_memory=True),
    Case("size-product-positions", "memory", _product(_declare("probe_position_x_m", (10**9,), np.float64)),
         "'probe_position_x_m' (shape (1000000000,)", role="probe", small_memory=True),
    Case("size-product-losses", "memory", _product(_declare("loss_values", (10**9,), np.float64)),
         "'loss_values' (shape (1000000000,)", role="probe", small_memory=True),
    # ---- text, metadata and values
    Case("text-cxi-units-not-utf8", "text", _cxi(bad_utf8_attr("units", DATA_PATH)), "is not UTF-8 text",
         options=("--probe", "estimate")),
    Case("text-product-name-not-utf8", "text", _product(bad_utf8_attr("name", fixed=False)), "is not UTF-8 text",
         role="probe"),
    Case("text-h5-metadata-not-utf8", "text", _scan(bad_utf8_attr("_metadata")), "is not UTF-8 text"),
    Case("json-h5-nested", "text", _scan(lambda f: f.attrs.__setitem__("_metadata", NESTED)), "nests values"),
    Case("json-h5-deep", "text", _scan(lambda f: f.attrs.__setitem__("_metadata", DEEP)), "nested more than 32"),
    Case("json-npz-nested", "text", lambda d: scan_npz(d / "scan.npz", NESTED), "nests values"),
    Case("json-recon-nested", "text", lambda d: recon_npz(d / "recon.npz", NESTED), "nests values", role="recon"),
    Case("json-product-nested", "text", _product(lambda f: f.attrs.__setitem__("ptychopinn_metadata", NESTED)),
         "nests values", role="probe"),
    Case("json-h5-int-400-digits", "text", _scan(lambda f: f.attrs.__setitem__("_metadata", BIG_INT)),
         "an integer of 400 digits"),
    Case("json-npz-int-400-digits", "text", lambda d: scan_npz(d / "scan.npz", BIG_INT), "an integer of 400 digits"),
    Case("json-product-int-400-digits", "text",
         _product(lambda f: f.attrs.__setitem__("ptychopinn_metadata", BIG_INT)), "an integer of 400 digits",
         role="probe"),
    Case("json-lone-surrogate", "text", _scan(lambda f: f.attrs.__setitem__("_metadata", SURROGATE)),
         "text that is not UTF-8"),
    Case("cxi-zero-frames", "text", _cxi(lambda f: (f.__setitem__(DATA_PATH, np.zeros((0, N, N), np.float32)),
                                                    replace("entry_1/sample_1/geometry_1/translation",
                                                            np.zeros((0, 3)))(f)), data=False),
         "holds no frames", options=("--probe", "estimate")),
    Case("cxi-translation-1e30", "text", _cxi(replace("entry_1/sample_1/geometry_1/translation",
                                                      np.c_[np.full(M, 1e30), np.zeros((M, 2))])),
         "holds a translation of 1e+30 m", options=("--probe", "estimate")),
    Case("user-block-512-accepted", "text", user_block(512), None),
    Case("user-block-4096-accepted", "text", user_block(4096), None),
    Case("user-block-2mib-accepted", "text", user_block(2 << 20), None),
    Case("user-block-zip-magic-accepted", "text", user_block(512, b"PK\x03\x04 not a zip"), None),
]


# ------------------------------------------------------------------------------------------- the driver
REFINED_WHEN_ACCEPTED = {"elink-inside-accepted", "vds-inside-accepted", "user-block-512-accepted"}
"""Accepted inputs also refined on the command line (a second each; ``info`` reads every accepted one whole)."""


def cli_argvs(case: Case, path: Path, scan: Path, out: Path) -> list[list[str]]:
    """The command lines a case must pass: ``info`` and (scans, probes) a one-iteration ``refine``."""
    refine = ["refine", "--flat", "--iterations", "1", "--output-dir", str(out), "--quiet"]
    if case.fragment is None and case.id not in REFINED_WHEN_ACCEPTED:
        return [["info", str(path)]]
    if case.role == "scan":
        return [["info", str(path)], [*refine, str(path), *case.options]]
    if case.role == "probe":
        return [["info", str(path)], [*refine, str(scan), "--probe", str(path)]]
    return [["info", str(path)]]


def _drive(spec_path: str, results_path: str) -> None:  # pragma: no cover - runs in the child process
    import contextlib
    import io
    import signal

    from ptychopinn.cli import main

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError("did not finish within the time limit (hangs)")

    signal.signal(signal.SIGALRM, on_alarm)
    spec = json.loads(Path(spec_path).read_text())
    results: dict[str, list[dict[str, Any]]] = {}
    for item in spec:
        runs = results.setdefault(item["id"], [])
        for key, value in item["env"].items():
            os.environ[key] = value
        for argv in item["argvs"]:
            runs.append({"argv": argv, "started": True})
            Path(results_path).write_text(json.dumps(results))  # a crash leaves the case it was in
            err, out = io.StringIO(), io.StringIO()
            signal.alarm(60)
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                    rc = main(argv)
            except BaseException as exc:  # noqa: BLE001 - recorded; the test fails on it
                rc = f"raised {type(exc).__name__}: {exc}"
            finally:
                signal.alarm(0)
            runs[-1] = {"argv": argv, "rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue()}
        if item.get("api"):
            runs.append({"api": True, "started": True})
            try:
                signal.alarm(60)
                from ptychopinn.io.registry import load_scan

                load_scan(item["api"], probe="auto")
                runs[-1] = {"api": True, "result": "accepted"}
            except BaseException as exc:  # noqa: BLE001 - recorded; the test checks class and message
                runs[-1] = {"api": True, "error": type(exc).__name__,
                            "mro": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}
            finally:
                signal.alarm(0)
        for key in item["env"]:
            os.environ.pop(key, None)
        Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":  # pragma: no cover
    import sys

    _drive(sys.argv[1], sys.argv[2])
