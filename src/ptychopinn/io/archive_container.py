"""The container of a model archive (:mod:`ptychopinn.io.archive`): which members it may hold, where it is,
and reading those members from a zip or an extracted-members directory without trusting it.

Every check runs before a member is decompressed: unsafe member names (absolute, drive letter, ``..``,
backslash), duplicates, declared sizes over the limits (zip bombs), encrypted members, the reference
PtychoPINN TensorFlow/PyTorch archives (dill/Keras/torch pickles), members named like pickles, unknown
member types (tolerated extras: ``.json``, ``.safetensors``, ``.txt``, ``.png``); then each member is read
with a bound on its actual size and refused when its bytes start with a pickle protocol header.

A directory of extracted members is accepted wherever an archive is (ptychodus extracts archives saved
under another name); its files (walked recursively; links, devices and pipes refused) get the same checks.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ptychopinn.errors import ArchiveError
from ptychopinn.limits import check_memory, file_kind, open_regular

__all__ = ["ALLOWED_EXTRA_SUFFIXES", "ARCHIVE_NAME", "CONFIG_MEMBER", "MANIFEST_MEMBER", "METADATA_MEMBER",
           "PICKLE_SUFFIXES", "REQUIRED_MEMBERS", "RESAVE_HINT", "WEIGHTS_MEMBER", "corrupt_error",
           "read_members", "resolve_archive_path"]

ARCHIVE_NAME = "wts.h5.zip"
MANIFEST_MEMBER = "manifest.json"
CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "weights.safetensors"
METADATA_MEMBER = "metadata.json"
REQUIRED_MEMBERS = (MANIFEST_MEMBER, CONFIG_MEMBER, WEIGHTS_MEMBER)
ALLOWED_EXTRA_SUFFIXES = (".json", ".safetensors", ".txt", ".png")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".dill", ".ckpt", ".joblib")
RESAVE_HINT = "re-save it with ptychopinn"

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
# Basenames only the reference system's archives contain (reference notes, section 7).
_REFERENCE_TF_MARKERS = frozenset({"manifest.dill", "model.keras", "custom_objects.dill", "params.dill"})
_REFERENCE_TORCH_MARKERS = frozenset({"model.pth", "torch_scaling_metadata.pt"})
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, struct.error)


def corrupt_error(where: Path, detail: str) -> ArchiveError:
    """The error for an archive whose bytes are damaged (``detail`` says where)."""
    return ArchiveError(f"{where} is corrupt or truncated ({detail}); re-copy the archive or {RESAVE_HINT}")


def _pickle_error(where: Path, name: str) -> ArchiveError:
    return ArchiveError(
        f"{where} member {name!r} contains a pickle; refusing to load (pickles can execute "
        "code); use an archive written by ptychopinn"
    )


def _bomb(where: Path, detail: str) -> ArchiveError:
    return ArchiveError(
        f"{where} {detail}; refusing to decompress it (possible zip bomb); raise "
        "max_member_bytes/max_total_bytes only for a trusted archive"
    )


# --------------------------------------------------------------------------------------------- locating


def _reference_backend(names: Sequence[str]) -> str | None:
    """'tensorflow'/'pytorch' when ``names`` look like a reference-system archive, else None."""
    basenames = {n.rstrip("/").rsplit("/", 1)[-1] for n in names}
    if basenames & _REFERENCE_TORCH_MARKERS:
        return "pytorch"
    return "tensorflow" if basenames & _REFERENCE_TF_MARKERS else None


def _reference_error(where: Path, backend: str) -> ArchiveError:
    what = (
        "the reference PtychoPINN TensorFlow backend (dill/Keras)"
        if backend == "tensorflow"
        else "the reference PtychoPINN PyTorch backend (dill/torch pickles)"
    )
    return ArchiveError(
        f"{where}: this is a model archive of {what}; ptychopinn reads only PyTorch archives written by "
        "ptychopinn; retrain with `ptychopinn train` (its files are pickles and are not opened, for safety)"
    )


def _walk_dir(directory: Path) -> list[str]:
    """Relative posix names of every entry under ``directory`` (directories end with '/')."""
    names: list[str] = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        rel = Path(root).relative_to(directory)
        names += [(rel / d).as_posix() + "/" for d in dirs] + [(rel / f).as_posix() for f in files]
    return sorted(names)


def _irregular(p: Path) -> ArchiveError:
    return ArchiveError(f"model archive {p} is {file_kind(os.stat(p).st_mode)}; expected a regular file (pipes "
                        f"and devices never end or block); pass the {ARCHIVE_NAME} file")


def resolve_archive_path(path: str | os.PathLike[str]) -> Path:
    """A file -> itself; a directory holding ``wts.h5.zip`` -> that file; a directory holding the
    extracted members (manifest.json, config.json, weights.safetensors) -> the directory; a missing
    ``X`` whose ``X.zip`` exists (the reference system's ``.../wts.h5`` convention) -> ``X.zip``.

    Raises FileNotFoundError when nothing fits, ArchiveError for a reference-system archive directory or for
    a pipe, device or socket (only regular files are read: those would block or never end).
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        # The reference loaders take the archive path without '.zip' ('.../wts.h5') and append it.
        if p.with_name(p.name + ".zip").is_file():
            return p.with_name(p.name + ".zip")
        raise FileNotFoundError(f"model archive not found: {p}")
    if not p.is_dir():
        raise _irregular(p)
    if (p / ARCHIVE_NAME).is_file():
        return p / ARCHIVE_NAME
    if (p / ARCHIVE_NAME).exists():
        raise _irregular(p / ARCHIVE_NAME)
    if all((p / m).is_file() for m in REQUIRED_MEMBERS):
        return p
    # Two levels are enough to recognise an extracted reference archive without walking a whole tree.
    listing = sorted(q.relative_to(p).as_posix() for q in [*p.glob("*"), *p.glob("*/*")])
    backend = _reference_backend(listing)
    if backend is not None:
        raise _reference_error(p, backend)
    raise FileNotFoundError(
        f"no model archive in directory {p}: looked for {ARCHIVE_NAME} or the extracted members "
        f"{', '.join(REQUIRED_MEMBERS)}; found {listing[:20] or 'nothing'}; pass the archive file"
    )


# --------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Entry:
    name: str
    size: int  # declared (zip header) or on-disk size
    is_dir: bool
    encrypted: bool = False
    irregular: bool = False  # directory form: a symbolic link, device, pipe or socket


def _read_bounded(stream: IO[bytes], *, name: str, declared: int, limit: int, where: Path) -> bytes:
    """Read ``stream`` in chunks, refusing as soon as it yields more than ``declared`` or ``limit`` bytes
    (a header that lies about the size must not make us decompress without bound)."""
    buf = bytearray()
    while chunk := stream.read(_CHUNK):
        buf += chunk
        if len(buf) > min(declared, limit):
            raise _bomb(
                where,
                f"member {name!r} decompresses to more than its declared {declared} bytes "
                f"or the limit of {limit} bytes",
            )
    return bytes(buf)


def _check_entries(entries: Sequence[_Entry], where: Path, max_member: int, max_total: int) -> None:
    """Name, type and declared-size checks; they run before any member is decompressed."""
    names = [e.name for e in entries]
    for e in entries:
        parts = e.name.rstrip("/").split("/")
        unsafe = not e.name or e.name.startswith("/") or "\\" in e.name or _DRIVE.match(e.name) is not None
        if unsafe or ".." in parts or any(ord(c) < 32 for c in e.name):
            raise ArchiveError(
                f"{where} contains an unsafe member name {e.name!r} (absolute path, drive "
                f"letter, '..' or backslash); expected plain relative names; {RESAVE_HINT}"
            )
        if e.irregular:
            raise ArchiveError(
                f"{where} contains an unsafe member {e.name!r} (a symbolic link, device or "
                "pipe); expected regular files; replace or remove it"
            )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ArchiveError(f"{where} contains duplicate member names {dupes}; expected each once; {RESAVE_HINT}")
    backend = _reference_backend(names)
    if backend is not None:
        raise _reference_error(where, backend)
    files = [e for e in entries if not e.is_dir]
    for e in files:
        if e.name.lower().endswith(PICKLE_SUFFIXES):
            raise _pickle_error(where, e.name)
        if e.name not in REQUIRED_MEMBERS and not e.name.lower().endswith(ALLOWED_EXTRA_SUFFIXES):
            raise ArchiveError(
                f"{where} contains unexpected member {e.name!r}; expected only "
                f"{', '.join(REQUIRED_MEMBERS)} and {'/'.join(ALLOWED_EXTRA_SUFFIXES)} extras; "
                "remove it"
            )
        if e.encrypted:
            raise ArchiveError(f"{where} member {e.name!r} is encrypted; expected plain members; {RESAVE_HINT}")
    present = {e.name for e in files}
    for required in REQUIRED_MEMBERS:
        if required not in present:
            raise ArchiveError(
                f"{where} has no member {required!r}; found {sorted(names) or 'nothing'}; "
                f"expected {', '.join(REQUIRED_MEMBERS)}; {RESAVE_HINT}"
            )
    for e in files:
        if e.size > max_member:
            raise _bomb(
                where, f"member {e.name!r} declares {e.size} bytes, more than max_member_bytes={max_member}"
            )
    total = sum(e.size for e in files)
    if total > max_total:
        raise _bomb(where, f"declares {total} bytes in all, more than max_total_bytes={max_total}")
    # the member bytes, then the tensors built from them
    check_memory(2 * total, f"model archive {where} (members declaring {total} bytes)",
                 "check that this is the right archive", ArchiveError)


def _open_member_file(directory: Path, name: str) -> IO[bytes]:
    """Open an extracted member that passed the checks; a file swapped for a link, pipe or device since then is
    refused, never followed or waited on (O_NOFOLLOW, O_NONBLOCK, fstat of the open descriptor)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(directory / name, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArchiveError(f"{directory} member {name!r} is not a regular file; expected regular files; "
                           "replace or remove it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


@contextlib.contextmanager
def _open_source(path: Path) -> Iterator[tuple[list[_Entry], Callable[[str], IO[bytes]]]]:
    """Yield the entries of a zip archive or extracted-members directory and an opener name -> stream."""
    if path.is_dir():
        entries = []
        for name in _walk_dir(path):
            st = os.lstat(path / name.rstrip("/"))
            regular = stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
            entries.append(_Entry(name, st.st_size, stat.S_ISDIR(st.st_mode), irregular=not regular))
        yield entries, lambda name: _open_member_file(path, name)
        return
    # Opened once, as a regular file (a pipe or device swapped in after resolve_archive_path would block).
    with open_regular(path, "model archive", ArchiveError) as fh:
        if not zipfile.is_zipfile(fh):
            fh.seek(0)
            if fh.read(4) == b"PK\x03\x04":  # starts like a zip but its central directory is gone
                raise corrupt_error(path, "no zip central directory")
            raise ArchiveError(
                f"{path} is not a zip archive; expected a ptychopinn model archive ({ARCHIVE_NAME}) "
                "written by `ptychopinn train`; pass that file or the directory holding it"
            )
        try:
            zf = zipfile.ZipFile(fh)
        except _READ_ERRORS as exc:
            raise corrupt_error(path, str(exc)) from None
        with zf:
            infos = zf.infolist()
            yield (
                [_Entry(i.filename, i.file_size, i.is_dir(), encrypted=bool(i.flag_bits & 0x1)) for i in infos],
                lambda name: zf.open(name),
            )


def read_members(
    path: Path, wanted: Callable[[str], bool], max_member: int, max_total: int
) -> dict[str, bytes]:
    """Check the archive or directory at ``path``; return the bytes of the member files ``wanted``."""
    out: dict[str, bytes] = {}
    with _open_source(path) as (entries, opener):
        _check_entries(entries, path, max_member, max_total)
        remaining = max_total
        for e in entries:
            if e.is_dir or not wanted(e.name):
                continue
            try:
                with opener(e.name) as stream:
                    limit = min(max_member, remaining)
                    data = _read_bounded(stream, name=e.name, declared=e.size, limit=limit, where=path)
            except _READ_ERRORS as exc:
                raise corrupt_error(path, f"member {e.name!r}: {exc}") from None
            except NotImplementedError as exc:
                raise ArchiveError(
                    f"{path} member {e.name!r} uses an unsupported compression ({exc}); "
                    f"expected deflate or stored; {RESAVE_HINT}"
                ) from None
            remaining -= len(data)
            # 0x80 then 0x02..0x05 opens every pickle of protocol 2+ (torch.save, dill, joblib).
            if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
                raise _pickle_error(path, e.name)
            out[e.name] = data
    return out
