"""The one gate between untrusted HDF5 files and the readers (HDF5 scans, CXI, ptychodus products, probes and
objects): every HDF5 file is opened, every name resolved and every dataset or attribute read through here.

Rules (a violation is one :class:`~ptychopinn.errors.DataFormatError` line naming the file and the object):

* **Links** are resolved by this module, one name component at a time, never by HDF5 (whose ``name in
  group`` follows an external link, so that a link to a named pipe blocks forever). Soft links: at most
  :data:`MAX_LINK_HOPS` per name (a loop is an error, a dangling link is a missing name). External links: only
  to regular HDF5 files inside the *input's folder* (the directory of the file the user gave), opened and
  checked like the input itself. User-defined link types are refused.
* **Storage outside the dataset**: external raw storage and virtual datasets are accepted only when every file
  they name is a regular file inside the input's folder; external raw files must also hold the bytes they are
  declared to hold (they are read by this module, never by HDF5, whose search path depends on the environment
  and the working directory), and virtual sources must be existing datasets that pass these checks themselves
  (HDF5 would read a missing source as fill values).
* **Filters**: only :data:`ALLOWED_FILTERS`, those the README promises. ``hdf5plugin`` is imported once, and
  the filters it registers beyond those are unregistered again.
* **Memory**: before any read, the declared bytes of the selection plus its chunks (a whole chunk is decoded
  even for one row) are checked against :func:`ptychopinn.limits.memory_limit`. Variable-length strings,
  whose size no header declares, are bounded by the size of their file.
* **Decoders run in a child process** (:mod:`ptychopinn.io.h5decode`): a filtered or virtual dataset, and a
  variable-length string in a file larger than the memory limit, is decoded there, under an address-space
  limit of the declared need, after each chunk's header is checked against the declared chunk size. A crash,
  an endless loop or a decompression bomb ends that process, and the reader raises one line.
* **Text** (string attributes and datasets) must be UTF-8.

h5py is imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.errors import DataFormatError
from ptychopinn.io.files import container, regular_file
from ptychopinn.limits import check_memory, file_kind, memory_limit

ALLOWED_FILTERS: dict[int, str] = {
    1: "gzip", 2: "shuffle", 3: "fletcher32", 32000: "lzf", 32001: "Blosc", 32004: "LZ4", 32008: "bitshuffle",
    32015: "Zstd",
}
"""HDF5 filter id -> name of the filters ptychopinn decodes (the README's list)."""

KNOWN_FILTERS: dict[int, str] = {
    4: "szip", 5: "nbit", 6: "scaleoffset", 307: "bzip2", 32013: "ZFP", 32017: "SZ", 32018: "FCIDECOMP",
    32024: "SZ3", 32026: "Blosc2", 32028: "SPERR", 32033: "HTJ2K",
}
"""Names of other common filters, for messages only."""

MAX_LINK_HOPS = 16
"""Soft and external links followed while resolving one name; more means a loop."""
MAX_VIRTUAL_DEPTH = 4
"""Virtual datasets whose sources are virtual datasets, nested at most this deep."""
_PREFIX_ENV = ("HDF5_VDS_PREFIX", "HDF5_EXT_PREFIX")  # would make HDF5 look for virtual sources elsewhere


def supported_filters() -> str:
    """The decodable compression filters, for messages and the README."""
    return "gzip, lzf, bitshuffle/LZ4, LZ4, Blosc, Zstd (with shuffle and fletcher32)"


@functools.cache
def register_filters() -> None:
    """Make the allowed plugin filters available, and only them.

    ``import hdf5plugin`` registers every filter it ships (SZ3, SPERR, bzip2, ...), whose decoders crash or
    spin on corrupt input. When this call is the process's first import of it, the filters it registered
    beyond :data:`ALLOWED_FILTERS` are unregistered again (a host that imported hdf5plugin itself keeps its
    choice; :func:`check_dataset` refuses those filters for every read of this module either way).
    """
    import h5py

    first = "hdf5plugin" not in sys.modules
    try:
        import hdf5plugin  # its import registers its filters
    except ImportError:  # pragma: no cover - a declared dependency; gzip and lzf still work without it
        return
    if not first:
        return
    for name, origin in hdf5plugin.get_config().registered_filters.items():
        fid = hdf5plugin.FILTERS[name]
        if origin != "unknown" and fid not in ALLOWED_FILTERS and h5py.h5z.filter_avail(fid):
            h5py.h5z.unregister_filter(fid)


@functools.cache
def _file_class() -> type:
    import h5py

    class GuardedFile(h5py.File):
        """A read-only ``h5py.File`` that remembers the input's folder and the files its links opened."""

        def __init__(self, path: str, folder: Path, root: Any = None):
            super().__init__(path, "r")
            self.folder = folder
            self.root = self if root is None else root
            self.linked: dict[str, Any] = {}

        def close(self) -> None:
            for other in self.linked.values():
                other.close()
            self.linked.clear()
            super().close()

    return GuardedFile


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def open_h5(path: str | os.PathLike[str], what: str = "HDF5 file") -> Any:
    """The HDF5 file at ``path``, opened read-only for the guarded reads of this module (use it as a context
    manager; it closes the files its external links opened).

    Raises:
        FileNotFoundError / DataFormatError: missing, not a regular file, or not readable as HDF5.
    """
    register_filters()
    p = regular_file(path, what)
    folder = Path(os.path.realpath(p.parent))
    return _open(p, what, folder, None)


def _open(p: Path, what: str, folder: Path, root: Any) -> Any:
    if container(p) != "hdf5":
        raise DataFormatError(f"{p} is not a readable HDF5 file (no HDF5 signature at offset 0, 512, 1024, ...); "
                              f"pass the {what} itself, re-export or re-copy it")
    try:
        return _file_class()(str(p), folder, root)
    except OSError as exc:
        raise DataFormatError(f"{p} is not a readable HDF5 file ({_first_line(exc)}); re-export or re-copy it") \
            from None


def _inside(target: Path, folder: Path) -> bool:
    return os.path.commonpath([str(target), str(folder)]) == str(folder)


def target_file(f: Any, filename: str, kind: str, where: str) -> Path:
    """The real path of the file ``filename`` that ``kind`` (e.g. ``'external link'``) of object ``where`` in
    the open file ``f`` names, resolved against the directory of ``f``'s file, after checking it is an
    existing regular file inside the input's folder.

    Raises:
        DataFormatError: outside the folder, missing, or not a regular file.
    """
    root = f.root
    name = Path(filename)
    candidate = name if name.is_absolute() else Path(f.filename).parent / name
    real = Path(os.path.realpath(candidate))
    fix = f"copy the file next to {root.filename} and refer to it by a relative name, or store the data in the file"
    if not _inside(real, root.folder):
        raise DataFormatError(f"{root.filename}: {kind} of '{where}' points to {filename}, outside the input's "
                              f"folder {root.folder}; files that HDF5 links pull in must lie inside it: {fix}")
    try:
        mode = os.stat(real).st_mode
    except OSError:
        raise DataFormatError(f"{root.filename}: {kind} of '{where}' points to {filename}, which does not exist; "
                              f"{fix}") from None
    kind_of = file_kind(mode)
    if kind_of != "a regular file":
        raise DataFormatError(f"{root.filename}: {kind} of '{where}' points to {filename}, which is {kind_of}, not "
                              "a regular file (pipes and devices block or never end); store the data in the file")
    return real


def _linked_file(f: Any, filename: str, kind: str, where: str) -> Any:
    real = target_file(f, filename, kind, where)
    root = f.root
    if os.path.realpath(root.filename) == str(real):
        return root
    if str(real) not in root.linked:
        root.linked[str(real)] = _open(real, f"file that {kind} '{where}' names", root.folder, root)
    return root.linked[str(real)]


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def resolve(f: Any, name: str) -> tuple[Any, Any] | None:
    """``(object, file holding it)`` for the absolute ``name`` in the open file ``f`` (from :func:`open_h5`),
    following soft and external links by the rules of this module; None when nothing is there (or a soft link
    dangles, or the path runs through a dataset).

    Raises:
        DataFormatError: a link loop, a refused external link, or a user-defined link type.
    """
    import h5py

    parts = _split(name)
    owner, group = f, f
    hops = 0
    while parts:
        part = parts.pop(0)
        key = part.encode("utf-8", "surrogateescape")
        try:
            if not group.id.links.exists(key):
                return None
            info = group.id.links.get_info(key)
            value: Any = None if info.type == h5py.h5l.TYPE_HARD else group.id.links.get_val(key)
        except (KeyError, OSError, RuntimeError, ValueError):
            return None
        if info.type == h5py.h5l.TYPE_HARD:
            try:
                obj = group[part]
            except (KeyError, OSError, RuntimeError, ValueError) as exc:
                raise DataFormatError(f"{f.filename}: '{name}' cannot be opened ({_first_line(exc)}); the file is "
                                      "truncated or corrupt: re-export or re-copy it") from None
            if parts and not isinstance(obj, h5py.Group):
                return None
            group = obj
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise DataFormatError(f"{f.filename}: resolving '{name}' follows more than {MAX_LINK_HOPS} links (a link "
                                  "loop); point the links at the data itself")
        if info.type == h5py.h5l.TYPE_SOFT:
            target = value.decode("utf-8", "replace")
            parts = _split(target) + parts
            if target.startswith("/"):
                group = owner
        elif info.type == h5py.h5l.TYPE_EXTERNAL:
            filename, target_path = (v.decode("utf-8", "replace") for v in value)
            owner = group = _linked_file(owner, filename, "external link", name)
            parts = _split(target_path) + parts
        else:
            raise DataFormatError(f"{f.filename}: '{name}' is a user-defined HDF5 link (type {info.type}), which "
                                  "ptychopinn does not follow; store the data itself under that name")
    return group, owner


def has(f: Any, name: str) -> bool:
    """True when ``name`` resolves to an object (see :func:`resolve`)."""
    return resolve(f, name) is not None


def dataset(f: Any, name: str) -> Any:
    """The checked dataset ``name`` (see :func:`check_dataset`) of the open file ``f``.

    Raises:
        DataFormatError: missing, not a dataset, or refused by :func:`check_dataset`.
    """
    import h5py

    found = resolve(f, name)
    if found is None:
        raise DataFormatError(f"{f.filename}: '{name}' leads to no dataset (a missing name, or a soft link that "
                              "points nowhere); store the array under that name")
    obj, owner = found
    if not isinstance(obj, h5py.Dataset):
        raise DataFormatError(f"{f.filename}: '{name}' is a {type(obj).__name__}, expected a dataset; store the "
                              "array itself under that name")
    check_dataset(owner, obj, name)
    return obj


def _owner(f: Any, dset: Any) -> Any:
    """The open :func:`open_h5` file holding ``dset`` (the input or a file one of its links opened)."""
    root = f.root
    filename = dset.file.filename
    if filename == root.filename:
        return root
    return root.linked.get(filename, root)


def check_dataset(f: Any, dset: Any, name: str, depth: int = 0) -> None:
    """Refuse a dataset of the open file ``f`` whose storage or filters break the rules of this module.

    Raises:
        DataFormatError: a filter outside :data:`ALLOWED_FILTERS`, external raw storage or a virtual source
            outside the input's folder, missing, too short, or not a regular file.
    """
    import h5py

    plist = dset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        fid, _flags, _values, label = plist.get_filter(i)
        if fid not in ALLOWED_FILTERS:
            known = KNOWN_FILTERS.get(fid) or label.decode("ascii", "replace")[:40] or "unknown"
            raise DataFormatError(f"{f.root.filename}: dataset '{name}' is compressed with HDF5 filter {fid} "
                                  f"({known}), which ptychopinn does not decode; supported: {supported_filters()}; "
                                  "re-save the dataset with one of those")
    if plist.get_external_count():
        _check_external(f, dset, name, plist)
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        _check_virtual(f, dset, name, plist, depth)


def _external_segments(f: Any, name: str, plist: Any) -> list[tuple[Path, int, int]]:
    segments = []
    for i in range(plist.get_external_count()):
        raw, offset, size = plist.get_external(i)
        filename = raw.decode("utf-8", "replace")
        segments.append((target_file(f, filename, "external storage", name), int(offset), int(size)))
    return segments


def _check_external(f: Any, dset: Any, name: str, plist: Any) -> None:
    dtype = dset.dtype
    if dtype.kind not in "biufc" or dset.id.get_type().get_size() != dtype.itemsize:
        raise DataFormatError(f"{f.root.filename}: dataset '{name}' keeps its {dtype} values in external files, "
                              "which ptychopinn reads only for plain numbers; store the data in the file")
    need = math.prod(int(d) for d in (dset.shape or ())) * dtype.itemsize
    have = 0
    for real, offset, size in _external_segments(f, name, plist):
        length = os.stat(real).st_size - offset
        if size != _UNLIMITED and length < size:
            raise DataFormatError(f"{f.root.filename}: dataset '{name}' declares {size} bytes at offset {offset} of "
                                  f"{real}, which holds only {max(length, 0)} there; the external file is truncated")
        have += length if size == _UNLIMITED else size
    if have < need:
        raise DataFormatError(f"{f.root.filename}: dataset '{name}' needs {need} bytes but its external files hold "
                              f"{have}; the external files are truncated: store the data in the file")


_UNLIMITED = 2**64 - 1  # H5F_UNLIMITED: an external segment reaching to the end of its file


def _check_virtual(f: Any, dset: Any, name: str, plist: Any, depth: int) -> None:
    import h5py

    for env in _PREFIX_ENV:
        if os.environ.get(env):
            raise DataFormatError(f"{f.root.filename}: dataset '{name}' is a virtual dataset and ${env} is set, "
                                  f"which makes HDF5 look for its sources elsewhere; unset {env} to read it")
    if depth >= MAX_VIRTUAL_DEPTH:
        raise DataFormatError(f"{f.root.filename}: virtual dataset '{name}' nests virtual sources more than "
                              f"{MAX_VIRTUAL_DEPTH} deep; flatten it (h5py: copy the data into a plain dataset)")
    for i in range(plist.get_virtual_count()):
        filename = plist.get_virtual_filename(i)
        source = plist.get_virtual_dsetname(i)
        if "%" in filename or "%" in source:
            raise DataFormatError(f"{f.root.filename}: virtual dataset '{name}' names its sources by a pattern "
                                  f"({filename}:{source}); map each source explicitly")
        src_file = f if filename == "." else _linked_file(f, filename, "virtual dataset source", name)
        found = resolve(src_file, source)
        if found is None or not isinstance(found[0], h5py.Dataset):
            raise DataFormatError(f"{f.root.filename}: virtual dataset '{name}' maps '{source}' of {filename}, which "
                                  "does not exist (HDF5 would read fill values instead); restore the source file "
                                  "or store the data in the file")
        check_dataset(found[1], found[0], f"{name} <- {filename}:{source}", depth + 1)


# ------------------------------------------------------------------------------------------------- reading
def _chunk_bytes(f: Any, dset: Any) -> int:
    """Bytes of the largest chunk of ``dset`` or, for a virtual dataset, of its (checked) sources; 0: none."""
    import h5py

    plist = dset.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.VIRTUAL:
        return math.prod(int(c) for c in dset.chunks) * dset.dtype.itemsize if dset.chunks else 0
    largest = 0
    for i in range(plist.get_virtual_count()):
        filename = plist.get_virtual_filename(i)
        src_file = f if filename == "." else _linked_file(f, filename, "virtual dataset source", dset.name)
        found = resolve(src_file, plist.get_virtual_dsetname(i))
        if found is not None:
            largest = max(largest, _chunk_bytes(found[1], found[0]))
    return largest


def _isolated(dset: Any) -> bool:
    import h5py

    plist = dset.id.get_create_plist()
    return plist.get_nfilters() > 0 or plist.get_layout() == h5py.h5d.VIRTUAL


def read(f: Any, dset: Any, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
    """Dataset ``dset`` (from :func:`dataset`) of the open file ``f``, whole or rows ``[lo, hi)`` of axis 0,
    after checking the declared bytes (selection plus two decoded chunks) against the memory limit.

    Filtered and virtual datasets are decoded in the child process of :mod:`ptychopinn.io.h5decode`; external
    raw storage is read from its files by this module.

    Raises:
        DataFormatError: above the memory limit, or the data cannot be read or decoded (one line).
    """
    if dset.shape is None:
        raise DataFormatError(f"{f.root.filename}: dataset '{name}' is empty (no dataspace); store data")
    shape = tuple(int(d) for d in dset.shape)
    sel_shape = shape if rows is None else (max(0, min(rows[1], shape[0]) - rows[0]), *shape[1:])
    if h5_string(dset.dtype) and h5_string(dset.dtype).length is None:
        return read_text_array(f, dset, name)
    owner = _owner(f, dset)
    out_bytes = math.prod(sel_shape) * dset.dtype.itemsize
    chunk = _chunk_bytes(owner, dset)
    where = f"{f.root.filename}: dataset '{name}' (shape {shape}, {dset.dtype}"
    where += f", chunks {tuple(dset.chunks)})" if dset.chunks else ")"
    check_memory(out_bytes + 2 * chunk, f"{where}, as read", "check the file", error=DataFormatError)
    if dset.id.get_create_plist().get_external_count():
        return _read_external(owner, dset, name, shape, rows)
    if _isolated(dset):
        from ptychopinn.io.h5decode import decode

        return decode(dset.file.filename, dset.name, rows, dset.dtype, sel_shape, out_bytes + 2 * chunk,
                      f"{f.root.filename}: dataset '{name}'")
    try:
        return np.asarray(dset[()] if rows is None else dset[rows[0]:rows[1]])
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise DataFormatError(f"{f.root.filename}: dataset '{name}' cannot be read ({_first_line(exc)}); the file is "
                              "truncated or corrupt: re-export or re-copy it") from None


def _read_external(f: Any, dset: Any, name: str, shape: tuple[int, ...],
                   rows: tuple[int, int] | None) -> np.ndarray:
    dtype = dset.dtype
    row = math.prod(shape[1:]) * dtype.itemsize if shape else dtype.itemsize
    lo, hi = (0, shape[0] if shape else 1) if rows is None else (rows[0], min(rows[1], shape[0]))
    start, want = lo * row, max(0, hi - lo) * row
    buf = bytearray(want)
    pos = 0  # logical byte offset of the current segment
    for real, offset, size in _external_segments(f, name, dset.id.get_create_plist()):
        length = os.stat(real).st_size - offset if size == _UNLIMITED else size
        a, b = max(start, pos), min(start + want, pos + length)
        if a < b:
            from ptychopinn.limits import open_regular

            with open_regular(real, "external storage file", DataFormatError) as fh:
                fh.seek(offset + a - pos)
                chunk = fh.read(b - a)
            if len(chunk) != b - a:
                raise DataFormatError(f"{f.root.filename}: external file {real} of dataset '{name}' ended early; "
                                      "the external file is truncated")
            buf[a - start:b - start] = chunk
        pos += length
    out = np.frombuffer(bytes(buf), dtype=dtype)
    return out.reshape((max(0, hi - lo), *shape[1:]) if shape else ()).astype(dtype.newbyteorder("="))


def iter_rows(f: Any, dset: Any, name: str, rows: int) -> Iterator[np.ndarray]:
    """Consecutive blocks of whole chunks (at least one) of about ``rows`` rows along axis 0, read by :func:`read`."""
    chunk_rows = int(dset.chunks[0]) if dset.chunks else 1
    step = max(chunk_rows, rows // chunk_rows * chunk_rows)  # whole chunks: each is decoded once
    for lo in range(0, int(dset.shape[0]), step):
        yield read(f, dset, name, (lo, lo + step))


# ------------------------------------------------------------------------------------------------- text
def h5_string(dtype: np.dtype) -> Any:
    """h5py's string info of ``dtype`` (``.length`` None for variable-length), or None for other types."""
    import h5py

    return h5py.check_string_dtype(dtype)


def _text_bound(f: Any, obj: Any, count: int) -> int:
    """Upper bound of the bytes ``count`` variable-length strings of ``obj``'s file can decode to."""
    return count * max(os.stat(obj.file.filename).st_size, 1)


def decode_text(raw: Any, where: str) -> Any:
    """``raw`` (bytes, or a str h5py decoded with surrogate escapes) as a str (an array of them: an object
    array of str), refusing invalid UTF-8."""
    if isinstance(raw, np.ndarray):
        if raw.size != 1:
            return np.array([decode_text(v, where) for v in raw.reshape(-1)], dtype=object).reshape(raw.shape)
        raw = raw.reshape(-1)[0]
    if isinstance(raw, (bytes, np.bytes_)):
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{where} is not UTF-8 text (byte 0x{bytes(raw)[exc.start]:02x} at offset "
                                  f"{exc.start}); write it as UTF-8") from None
    text = str(raw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataFormatError(f"{where} is not UTF-8 text (undecodable byte at offset {exc.start}); write it as "
                              "UTF-8") from None
    return text


def read_text_array(f: Any, dset: Any, name: str) -> np.ndarray:
    """A variable-length string dataset as an object array of str, bounded as the module docstring says."""
    count = math.prod(int(d) for d in dset.shape)
    where = f"{f.root.filename}: dataset '{name}'"
    return _text_values(f, dset, None, count, where, lambda: dset.asstr(errors="surrogateescape")[()])


def _text_values(f: Any, obj: Any, attr: str | None, count: int, where: str, reader: Any) -> np.ndarray:
    bound = _text_bound(f, obj, count)
    if bound + count * 64 > memory_limit() or (attr is None and _isolated(obj)):
        from ptychopinn.io.h5decode import decode_text_values

        values = decode_text_values(obj.file.filename, obj.name, attr, min(bound, memory_limit()), where)
    else:
        try:
            values = reader()
        except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise DataFormatError(f"{where} cannot be read ({_first_line(exc)}); the file is corrupt: re-export "
                                  "it") from None
    arr = np.asarray(values, dtype=object).reshape(-1)
    return np.array([decode_text(v, where) for v in arr], dtype=object).reshape(np.shape(values))


def attribute(f: Any, obj: Any, key: str, where: str) -> Any:
    """Attribute ``key`` of ``obj`` (None when absent): text as str (UTF-8 checked), anything else as a numpy
    value, after checking its declared size against the memory limit.

    Raises:
        DataFormatError: too large, unreadable, or text that is not UTF-8.
    """
    try:
        if key not in obj.attrs:
            return None
        aid = obj.attrs.get_id(key)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise DataFormatError(f"{f.root.filename}: attribute '{key}' of {where} cannot be read "
                              f"({_first_line(exc)}); the file is corrupt") from None
    label = f"{f.root.filename}: attribute '{key}' of {where}"
    count = math.prod(int(d) for d in (aid.shape or ()))
    info = h5_string(aid.dtype)
    if info is not None and info.length is None:
        values = _text_values(f, obj, key, max(count, 1), label,
                              lambda: obj.attrs[key])
        return values.reshape(-1)[0] if values.size == 1 else values
    check_memory(count * aid.dtype.itemsize, label, "check the file", error=DataFormatError)
    try:
        value = obj.attrs[key]
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise DataFormatError(f"{label} cannot be read ({_first_line(exc)}); the file is corrupt") from None
    if info is not None or isinstance(value, (bytes, np.bytes_)) or (
            isinstance(value, np.ndarray) and value.dtype.kind == "S"):
        return decode_text(value, label)
    return value
