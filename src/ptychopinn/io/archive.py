"""Safe, model-agnostic model archive ``wts.h5.zip``: JSON + safetensors, never pickle.

A zip (named ``wts.h5.zip``, the name the ptychodus ecosystem looks for) holding ``manifest.json``
(``format``, ``format_version``, ``backend``, ``library_version``, ``model_names``, ``created_at``,
``members: {name: {size, sha256}}`` and optionally ``complex_tensors``), ``config.json`` (the caller's
configuration object), ``weights.safetensors`` (tensors only) and optionally ``metadata.json``.

This module writes archives and reads their contents: the manifest (validated), the members' sizes and
sha256 against it, the JSON objects and the tensors. Locating an archive and reading its members without
trusting the container (names, sizes, zip bombs, pickles, reference-system archives) is
:mod:`ptychopinn.io.archive_container`'s job. Loading never unpickles or executes anything.

Complex tensors: safetensors stores ``complex64`` natively; ``complex128``/``complex32`` are stored as
``torch.view_as_real`` views (trailing dimension 2) under the same name, listed in the manifest's
``complex_tensors``, and restored on load, so callers get back the dtype they saved.

A directory of extracted members is accepted wherever an archive is (ptychodus extracts archives saved
under another name).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

import ptychopinn
from ptychopinn.config_fields import is_int
from ptychopinn.errors import ArchiveError
from ptychopinn.io.archive_container import (
    ARCHIVE_NAME,
    CONFIG_MEMBER,
    MANIFEST_MEMBER,
    METADATA_MEMBER,
    RESAVE_HINT,
    WEIGHTS_MEMBER,
    corrupt_error,
    read_members,
    resolve_archive_path,
)
from ptychopinn.io.atomic import temp_prefix_suffix
from ptychopinn.limits import nesting_depth

FORMAT_NAME = "ptychopinn-archive"
FORMAT_VERSION = 1
BACKEND = "pytorch"
MAX_JSON_DEPTH = 32  # manifest/config/metadata written by ptychopinn nest 4 levels at most

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Archive:
    """A loaded archive: the validated ``manifest``, the caller's ``config`` dict, ``tensors`` (name ->
    contiguous CPU tensor with the saved dtype and shape) and ``metadata`` (``{}`` when none was saved)."""

    manifest: dict[str, Any]
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]


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
    prefix, suffix = temp_prefix_suffix(target.name)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=suffix)
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


# --------------------------------------------------------------------------------------------- reading


def _json_object(data: bytes, name: str, where: Path) -> dict[str, Any]:
    too_deep = ArchiveError(
        f"{name} in {where} nests values more than {MAX_JSON_DEPTH} levels deep; expected the flat objects "
        f"ptychopinn writes; the archive is corrupt or hostile; {RESAVE_HINT}"
    )
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArchiveError(
            f"{name} in {where} is not valid JSON ({str(exc)[:200]}); the archive is corrupt; {RESAVE_HINT}"
        ) from None
    except RecursionError:
        raise too_deep from None
    if nesting_depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise too_deep
    if not isinstance(obj, dict):
        raise ArchiveError(
            f"{name} in {where} must hold a JSON object; found {type(obj).__name__}; {RESAVE_HINT}"
        )
    return obj


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _validate_manifest(m: dict[str, Any], where: Path) -> None:
    def field_error(field: str, expected: str) -> ArchiveError:
        return ArchiveError(
            f"manifest.json in {where}: field {field!r} must be {expected}; found "
            f"{m.get(field)!r}; the archive is corrupt or not from ptychopinn; {RESAVE_HINT}"
        )

    if m.get("format") != FORMAT_NAME:
        raise field_error("format", repr(FORMAT_NAME))
    version = m.get("format_version")
    if not is_int(version):
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
        isinstance(e, dict) and is_int(e.get("size")) and _SHA256.match(str(e.get("sha256"))) is not None
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
    raw = read_members(where, wanted, max_member, max_total)
    manifest = _json_object(raw[MANIFEST_MEMBER], MANIFEST_MEMBER, where)
    _validate_manifest(manifest, where)
    for name in manifest["members"]:
        if wanted(name) and name not in raw:
            raise corrupt_error(where, f"manifest.json lists member {name!r}, which is missing")
    for name, data in raw.items():
        # What the caller receives must be listed and intact; other tolerated extras were screened for
        # pickles above and are verified only when the manifest lists them.
        if name == MANIFEST_MEMBER:
            continue
        entry = manifest["members"].get(name)
        if entry is None and name in (CONFIG_MEMBER, WEIGHTS_MEMBER, METADATA_MEMBER):
            raise corrupt_error(where, f"member {name!r} is not listed in manifest.json")
        digest = hashlib.sha256(data).hexdigest()
        if entry is not None and (entry["size"] != len(data) or entry["sha256"] != digest):
            raise corrupt_error(
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
        raise corrupt_error(where, f"{WEIGHTS_MEMBER} has an invalid safetensors header or body: {exc}") from None
    for name in manifest.get("complex_tensors", []):
        t = tensors.get(name)
        if t is None or not t.is_floating_point() or t.ndim == 0 or t.shape[-1] != 2:
            found = None if t is None else (tuple(t.shape), t.dtype)
            raise corrupt_error(
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
