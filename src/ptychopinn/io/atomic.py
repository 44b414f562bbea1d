"""One way to write an output file: into a temporary file in the target folder, fsync, give it the mode
a normal ``open()`` would (``0666 & ~umask``; ``mkstemp`` alone leaves ``0600``), then rename over the
final name. A reader never sees a half-written file, and a failed write leaves nothing behind; a process
killed mid-write leaves its temporary ``.NAME.*.tmp`` (:data:`TEMP_PATTERN`), which
:func:`remove_stale_temp_files` clears on the next run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_PATTERN = ".{name}.*.tmp"
"""Glob of the temporary files written next to an output ``name`` (``{name}`` filled in)."""


def temp_prefix_suffix(name: str) -> tuple[str, str]:
    """``(prefix, suffix)`` of the temporary file names of output ``name`` (for ``mkstemp``)."""
    return f".{name}.", ".tmp"


def remove_stale_temp_files(directory: str | os.PathLike[str], target_suffix: str) -> list[Path]:
    """Delete ``.NAME.*.tmp`` files (NAME ending in ``target_suffix``) left in ``directory`` by a killed writer.

    A finished write renames its temporary file away, so one that is still there belongs to a run that was
    killed mid-write; call this only while holding the folder's lock (:func:`ptychopinn.io.outputs.folder_lock`),
    when no other run can be writing there. Symbolic links are removed, never followed. Returns the removed paths.
    """
    removed = []
    folder = Path(directory)
    if folder.is_dir():
        for stale in folder.glob(TEMP_PATTERN.format(name=f"*{target_suffix}")):
            if stale.is_dir() and not stale.is_symlink():
                continue
            with contextlib.suppress(OSError):
                stale.unlink()
                removed.append(stale)
    return removed


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (no race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def default_file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open(path, 'w')`` gives a new file."""
    return 0o666 & ~_umask()


def _named(exc: OSError, path: Path) -> OSError:
    if exc.filename is None:
        return type(exc)(exc.errno, exc.strerror or str(exc), str(path))
    return exc


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced, chmodded and renamed to ``path``.

    For writers that need a file name (h5py). Missing parent folders are created. On any error the
    temporary file is removed and an OSError names ``path``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = temp_prefix_suffix(final.name)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        named = _named(exc, final)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Yield an open file (``mode`` ``'wb'`` or ``'w'``) whose content replaces ``path`` atomically on success."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding if mode == "w" else None) as fh:
        yield fh
        fh.flush()
