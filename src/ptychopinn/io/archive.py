"""Safe, model-agnostic model archive ``wts.h5.zip``: JSON + safetensors, never pickle.

A zip (named ``wts.h5.zip``, the name the ptychodus ecosystem looks for) holding ``manifest.json``
(``format``, ``format_version``, ``backend``, ``library_version``, ``model_names``, ``created_at``,
``members: {name: {size, sha256}}`` and optionally ``complex_tensors``), ``config.json`` (the caller's
configuration object), ``weights.safetensors`` (tensors only) and optionally ``metadata.json``.

Loading never unpickles or executes anything. It refuses unsafe member names (absolute, drive letter,
``..``, backslash), duplicates, declared or actual sizes over the limits (zip bombs), encrypted members,
the reference PtychoPINN TensorFlow/PyTorch archives (dill/Keras/torch pickles), members named like
pickles or whose bytes start with a pickle protocol header, unknown member types (tolerated extras:
``.json``, ``.safetensors``, ``.txt``, ``.png``; screened, never returned) and size/sha256 mismatches.

Complex tensors: safetensors stores ``complex64`` natively; ``complex128``/``complex32`` are stored as
``torch.view_as_real`` views (trailing dimension 2) under the same name, listed in the manifest's
``complex_tensors``, and restored on load, so callers get back the dtype they saved.

A directory of extracted members is accepted wherever an archive is (ptychodus extracts archives saved
under another name); its files (walked recursively; links, devices and pipes refused) get the same checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

import ptychopinn
from ptychopinn.errors import ArchiveError
from ptychopinn.limits import check_memory, file_kind, nesting_depth, open_regular

ARCHIVE_NAME = "wts.h5.zip"
FORMAT_NAME = "ptychopinn-archive"
FORMAT_VERSION = 1
BACKEND = "pytorch"
MANIFEST_MEMBER = "manifest.json"
CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "weights.safetensors"
METADATA_MEMBER = "metadata.json"
REQUIRED_MEMBERS = (MANIFEST_MEMBER, CONFIG_MEMBER, WEIGHTS_MEMBER)
ALLOWED_EXTRA_SUFFIXES = (".json", ".safetensors", ".txt", ".png")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".dill", ".ckpt", ".joblib")

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Basenames only the reference system's archives contain (reference notes, section 7).
_REFERENCE_TF_MARKERS = frozenset({"manifest.dill", "model.keras", "custom_objects.dill", "params.dill"})
_REFERENCE_TORCH_MARKERS = frozenset({"model.pth", "torch_scaling_metadata.pt"})
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, struct.error)
_RESAVE = "re-save it with ptychopinn"
MAX_JSON_DEPTH = 32  # manifest/config/metadata written by ptychopinn nest 4 levels at most


@dataclass(frozen=True)
class Archive:
    """A loaded archive: the validated ``manifest``, the caller's ``config`` dict, ``tensors`` (name ->
    contiguous CPU tensor with the saved dtype and shape) and ``metadata`` (``{}`` when none was saved)."""

    manifest: dict[str, Any]
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]


def _corrupt(where: Path, detail: str) -> ArchiveError:
    return ArchiveError(f"{where} is corrupt or truncated ({detail}); re-copy the archive or {_RESAVE}")


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


# --------------------------------------------------------------------------------------------- saving


def _json_bytes(obj: Any, what: str) -> bytes:
    # allow_nan=False: standard JSON, so other tools (ptychodus, jq) can read the archive.
    try:
        return json.dumps(obj, indent=2, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ArchiveError(
            f"{what} must be JSON-serialisable (str/int/float/bool/None/list/dict, finite numbers); "
            f"found: {exc}; convert that value before saving"
        ) from None


def _prepare_tensors(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Detached contiguous CPU tensors safetensors accepts, and the names stored as real views."""
    if not isinstance(tensors, Mapping):
        raise ArchiveError(
            f"tensors must be a mapping name -> torch.Tensor; found {type(tensors).__name__}; "
            "pass e.g. module.state_dict()"
        )
    out: dict[str, torch.Tensor] = {}
    as_real: list[str] = []
    storages: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ArchiveError(
                f"tensor names must be non-empty strings other than '__metadata__'; "
                f"found {name!r}; rename the tensor"
            )
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            raise ArchiveError(
                f"tensor {name!r} must be a dense torch.Tensor; found {type(t).__name__} "
                f"{getattr(t, 'layout', '')}; convert it (torch.as_tensor, .to_dense())"
            )
        t = t.detach().to("cpu").resolve_conj().resolve_neg()
        if t.is_complex() and t.dtype != torch.complex64:
            t = torch.view_as_real(t)  # safetensors lacks complex128/complex32; the real view keeps all bits
            as_real.append(name)
        t = t.contiguous()
        # safetensors refuses tensors sharing storage (tied weights, views of one buffer): copy repeats.
        if t.untyped_storage().data_ptr() in storages or t.numel() == 0:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out, as_real


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported everywhere, hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_archive(
    path: str | Path,
    *,
    config: dict[str, Any],
    tensors: Mapping[str, torch.Tensor],
    metadata: dict[str, Any] | None = None,
    model_names: Sequence[str] = ("diffraction_to_obj",),
) -> Path:
    """Write an archive atomically; return its final path.

    ``path``: an existing directory (writes ``DIR/wts.h5.zip``) or a file path (parents are created).
    ``config``/``metadata``: JSON-able dicts. ``tensors``: name -> tensor of any shape, dtype and device
    (stored detached, contiguous, on CPU). The zip goes to a temporary file in the target directory, is
    fsynced and renamed over the target: a crash leaves the previous file or the new one, never a part.
    """
    if not isinstance(config, Mapping):
        raise ArchiveError(f"config must be a dict; found {type(config).__name__}; pass a dict")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ArchiveError(f"metadata must be a dict or None; found {type(metadata).__name__}; pass a dict")
    if (
        isinstance(model_names, str)
        or not model_names
        or not all(isinstance(n, str) and n for n in model_names)
    ):
        raise ArchiveError(
            f"model_names must be a non-empty sequence of non-empty strings; found "
            f"{model_names!r}; pass e.g. ('diffraction_to_obj',)"
        )
    prepared, as_real = _prepare_tensors(tensors)
    try:
        weights = _safetensors_save(prepared)
    except (ValueError, RuntimeError, SafetensorError) as exc:
        raise ArchiveError(
            f"tensors could not be stored as safetensors ({exc}); pass dense tensors of a standard dtype"
        ) from None
    payload = {CONFIG_MEMBER: _json_bytes(dict(config), "config"), WEIGHTS_MEMBER: weights}
    if metadata is not None:
        payload[METADATA_MEMBER] = _json_bytes(dict(metadata), "metadata")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": BACKEND,
        "library_version": ptychopinn.__version__,
        "model_names": list(model_names),
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "members": {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in payload.items()},
    }
    if as_real:
        manifest["complex_tensors"] = as_real
    payload = {MANIFEST_MEMBER: _json_bytes(manifest, "manifest"), **payload}

    target = Path(path)
    target = target / ARCHIVE_NAME if target.is_dir() else target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w") as zf:
                for name, data in payload.items():
                    info = zipfile.ZipInfo(name, date_time=now.timetuple()[:6])
                    # Weights barely compress; storing them keeps save and load fast.
                    info.compress_type = (
                        zipfile.ZIP_STORED if name == WEIGHTS_MEMBER else zipfile.ZIP_DEFLATED
                    )
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; an archive is shared like any output file
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)
    return target


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


def resolve_archive_path(path: str | Path) -> Path:
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


def _read_bounded(stream: BinaryIO, *, name: str, declared: int, limit: int, where: Path) -> bytes:
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
                f"letter, '..' or backslash); expected plain relative names; {_RESAVE}"
            )
        if e.irregular:
            raise ArchiveError(
                f"{where} contains an unsafe member {e.name!r} (a symbolic link, device or "
                "pipe); expected regular files; replace or remove it"
            )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ArchiveError(f"{where} contains duplicate member names {dupes}; expected each once; {_RESAVE}")
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
            raise ArchiveError(f"{where} member {e.name!r} is encrypted; expected plain members; {_RESAVE}")
    present = {e.name for e in files}
    for required in REQUIRED_MEMBERS:
        if required not in present:
            raise ArchiveError(
                f"{where} has no member {required!r}; found {sorted(names) or 'nothing'}; "
                f"expected {', '.join(REQUIRED_MEMBERS)}; {_RESAVE}"
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


def _open_member_file(directory: Path, name: str) -> BinaryIO:
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
def _open_source(path: Path) -> Iterator[tuple[list[_Entry], Callable[[str], BinaryIO]]]:
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
                raise _corrupt(path, "no zip central directory")
            raise ArchiveError(
                f"{path} is not a zip archive; expected a ptychopinn model archive ({ARCHIVE_NAME}) "
                "written by `ptychopinn train`; pass that file or the directory holding it"
            )
        try:
            zf = zipfile.ZipFile(fh)
        except _READ_ERRORS as exc:
            raise _corrupt(path, str(exc)) from None
        with zf:
            infos = zf.infolist()
            yield (
                [_Entry(i.filename, i.file_size, i.is_dir(), encrypted=bool(i.flag_bits & 0x1)) for i in infos],
                lambda name: zf.open(name),  # type: ignore[return-value]
            )


def _read_members(
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
                raise _corrupt(path, f"member {e.name!r}: {exc}") from None
            except NotImplementedError as exc:
                raise ArchiveError(
                    f"{path} member {e.name!r} uses an unsupported compression ({exc}); "
                    f"expected deflate or stored; {_RESAVE}"
                ) from None
            remaining -= len(data)
            # 0x80 then 0x02..0x05 opens every pickle of protocol 2+ (torch.save, dill, joblib).
            if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
                raise _pickle_error(path, e.name)
            out[e.name] = data
    return out


def _json_object(data: bytes, name: str, where: Path) -> dict[str, Any]:
    too_deep = ArchiveError(
        f"{name} in {where} nests values more than {MAX_JSON_DEPTH} levels deep; expected the flat objects "
        f"ptychopinn writes; the archive is corrupt or hostile; {_RESAVE}"
    )
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArchiveError(
            f"{name} in {where} is not valid JSON ({str(exc)[:200]}); the archive is corrupt; {_RESAVE}"
        ) from None
    except RecursionError:
        raise too_deep from None
    if nesting_depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise too_deep
    if not isinstance(obj, dict):
        raise ArchiveError(
            f"{name} in {where} must hold a JSON object; found {type(obj).__name__}; {_RESAVE}"
        )
    return obj


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _validate_manifest(m: dict[str, Any], where: Path) -> None:
    def field_error(field: str, expected: str) -> ArchiveError:
        return ArchiveError(
            f"manifest.json in {where}: field {field!r} must be {expected}; found "
            f"{m.get(field)!r}; the archive is corrupt or not from ptychopinn; {_RESAVE}"
        )

    if m.get("format") != FORMAT_NAME:
        raise field_error("format", repr(FORMAT_NAME))
    version = m.get("format_version")
    if not _is_int(version):
        raise field_error("format_version", "an integer")
    if version > FORMAT_VERSION:
        raise ArchiveError(
            f"{where} was written by a newer ptychopinn (format {version}); this ptychopinn "
            f"reads format {FORMAT_VERSION}; upgrade ptychopinn"
        )
    if version < 1:
        raise field_error("format_version", f"an integer in 1..{FORMAT_VERSION}; it is invalid")
    if not isinstance(m.get("backend"), str):
        raise field_error("backend", "a string")
    if m["backend"] != BACKEND:
        raise ArchiveError(
            f"{where} holds a model of backend {m['backend']!r}; this package reads only "
            f"PyTorch archives (backend {BACKEND!r}); retrain with `ptychopinn train`"
        )
    for field in ("library_version", "created_at"):
        if not isinstance(m.get(field), str):
            raise field_error(field, "a string")
    if not _is_str_list(m.get("model_names")) or not m["model_names"]:
        raise field_error("model_names", "a non-empty list of strings")
    members = m.get("members")
    entry_ok = lambda e: (  # noqa: E731
        isinstance(e, dict) and _is_int(e.get("size")) and _SHA256.match(str(e.get("sha256"))) is not None
    )
    if not isinstance(members, dict) or not all(entry_ok(e) for e in members.values()):
        raise field_error("members", "an object {name: {'size': int, 'sha256': 64 lowercase hex digits}}")
    if not _is_str_list(m.get("complex_tensors", [])):
        raise field_error("complex_tensors", "a list of strings")


def _load_checked(
    path: str | Path, wanted: Callable[[str], bool], max_member: int, max_total: int
) -> tuple[Path, dict[str, Any], dict[str, bytes]]:
    """Resolve, screen and read the ``wanted`` members; validate the manifest and the members' hashes."""
    where = resolve_archive_path(path)
    raw = _read_members(where, wanted, max_member, max_total)
    manifest = _json_object(raw[MANIFEST_MEMBER], MANIFEST_MEMBER, where)
    _validate_manifest(manifest, where)
    for name in manifest["members"]:
        if wanted(name) and name not in raw:
            raise _corrupt(where, f"manifest.json lists member {name!r}, which is missing")
    for name, data in raw.items():
        # What the caller receives must be listed and intact; other tolerated extras were screened for
        # pickles above and are verified only when the manifest lists them.
        if name == MANIFEST_MEMBER:
            continue
        entry = manifest["members"].get(name)
        if entry is None and name in (CONFIG_MEMBER, WEIGHTS_MEMBER, METADATA_MEMBER):
            raise _corrupt(where, f"member {name!r} is not listed in manifest.json")
        digest = hashlib.sha256(data).hexdigest()
        if entry is not None and (entry["size"] != len(data) or entry["sha256"] != digest):
            raise _corrupt(
                where,
                f"member {name!r} fails its sha256 check: manifest {entry['size']} bytes "
                f"{entry['sha256'][:12]}..., found {len(data)} bytes {digest[:12]}...",
            )
    return where, manifest, raw


def read_manifest(
    path: str | Path, *, max_member_bytes: int = 2 * 1024**3, max_total_bytes: int = 4 * 1024**3
) -> dict[str, Any]:
    """The validated manifest plus key ``"config"`` (the parsed config.json), for an ``info`` command.

    Decompresses only manifest.json and config.json (weights are neither read nor verified); every name,
    type and declared-size check of :func:`load_archive` still runs.
    """
    wanted = {MANIFEST_MEMBER, CONFIG_MEMBER}
    where, manifest, raw = _load_checked(path, wanted.__contains__, max_member_bytes, max_total_bytes)
    return {**manifest, "config": _json_object(raw[CONFIG_MEMBER], CONFIG_MEMBER, where)}


def load_archive(
    path: str | Path, *, max_member_bytes: int = 2 * 1024**3, max_total_bytes: int = 4 * 1024**3
) -> Archive:
    """Load and fully verify an archive: a zip file, a directory holding ``wts.h5.zip``, or a directory of
    extracted members. FileNotFoundError for a missing path; ArchiveError for anything unsafe, corrupt or
    unsupported. Tensors come back on CPU with the saved dtypes and shapes."""
    where, manifest, raw = _load_checked(path, lambda _: True, max_member_bytes, max_total_bytes)
    config = _json_object(raw[CONFIG_MEMBER], CONFIG_MEMBER, where)
    metadata = _json_object(raw[METADATA_MEMBER], METADATA_MEMBER, where) if METADATA_MEMBER in raw else {}
    try:
        tensors = _safetensors_load(raw[WEIGHTS_MEMBER])
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise _corrupt(where, f"{WEIGHTS_MEMBER} has an invalid safetensors header or body: {exc}") from None
    for name in manifest.get("complex_tensors", []):
        t = tensors.get(name)
        if t is None or not t.is_floating_point() or t.ndim == 0 or t.shape[-1] != 2:
            found = None if t is None else (tuple(t.shape), t.dtype)
            raise _corrupt(
                where,
                f"manifest marks {name!r} complex but {WEIGHTS_MEMBER} holds {found}, not "
                "a float tensor with trailing dimension 2",
            )
        tensors[name] = torch.view_as_complex(t.contiguous())
    return Archive(manifest=manifest, config=config, tensors=tensors, metadata=metadata)


__all__ = [
    "ARCHIVE_NAME",
    "FORMAT_VERSION",
    "Archive",
    "load_archive",
    "read_manifest",
    "resolve_archive_path",
    "save_archive",
]
