"""Output folders: which files a run may write, when they appear, and one run per folder.

Every command (and workflow function) that writes into an output folder follows the same four rules:

* :func:`check_outputs_apart`: no output may land on an input. Each output name (``reconstruction.npz``,
  ``run.log``, ``checkpoints/`` ...) is compared with every input by real path (links resolved) and by
  ``(st_dev, st_ino)`` (hard links), before anything is written; a collision, an output name taken by a
  folder, or an output folder that is a link out of the output folder is refused with one line.
* :func:`folder_lock`: one run per output folder (``flock`` on :data:`LOCK_NAME`, released by the kernel when
  the process dies, so a killed run never leaves a stale lock).
* :func:`staged_outputs`: a run writes into a private staging folder inside the output folder and its files
  are renamed into place only when it succeeds; a refused, failed or interrupted run leaves the folder as it
  was (a kill leaves the staging folder, removed by the next run).
* :func:`remove_stale_temporaries`: the temporary files and staging folders a killed run left behind (our own
  naming patterns only) are removed at the start of the next run, under the lock.

:func:`output_run` applies all of them in that order. Standard library only; cheap to import.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ptychopinn.errors import ConfigError
from ptychopinn.io.atomic import TEMP_PATTERN, remove_stale_temp_files

__all__ = ["LOCK_NAME", "STAGING_PATTERN", "check_outputs_apart", "folder_lock", "output_run",
           "remove_stale_temporaries", "staged_outputs"]

LOCK_NAME = ".ptychopinn.lock"
"""The lock file of an output folder (one run per folder; removed when the run ends)."""

_STAGING_PREFIX, _STAGING_SUFFIX = ".ptychopinn-run.", ".tmp"
STAGING_PATTERN = f"{_STAGING_PREFIX}*{_STAGING_SUFFIX}"
"""Glob of the staging folders :func:`staged_outputs` creates inside an output folder."""

_HOLDER_BYTES = 300  # the lock file holds one short line; never read more from it
_GLOB_CHARS = frozenset("*?[")

PathLike = str | os.PathLike[str]


def _identity(path: PathLike) -> tuple[str, tuple[int, int] | None]:
    """``(real path, (st_dev, st_ino) or None when nothing is there)`` of ``path`` (links followed)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return real, None
    return real, (st.st_dev, st.st_ino)


def _is_pattern(name: str) -> bool:
    return any(c in _GLOB_CHARS for c in name)


def _expand(out: Path, names: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """``(files, folders)``: the output files under ``out`` (glob names expanded to what exists, plus the
    temporary files of each literal name) and the folders of outputs (names ending in ``/``)."""
    files: list[Path] = []
    folders: list[Path] = []
    for name in names:
        if name.endswith("/"):
            folders.append(out / name.rstrip("/"))
        elif _is_pattern(name):
            files.extend(sorted(out.glob(name)))
        else:
            target = out / name
            files.append(target)
            if target.parent.is_dir():
                files.extend(sorted(target.parent.glob(TEMP_PATTERN.format(name=target.name))))
    return files, folders


def _collision(output: Path, source: PathLike, out: Path) -> ConfigError:
    return ConfigError(f"output {output} would overwrite the input {source} (the same file); expected the "
                       f"outputs apart from every input (an input is never overwritten); pass another "
                       f"--output-dir, or move the input out of {out}")


def check_outputs_apart(output_dir: PathLike, names: Sequence[str], inputs: Iterable[PathLike | None]) -> None:
    """Refuse, before anything is written, a run whose outputs would land on one of its inputs.

    Args:
        output_dir: the output folder (need not exist).
        names: the outputs, relative to ``output_dir``: file names (``'reconstruction.npz'``), glob patterns
            (``'checkpoints/best-*.ckpt'``) or folders of outputs (``'logs/'``: everything below it). The
            temporary files of each name and the staging folders of :func:`staged_outputs` count as outputs too.
        inputs: the files the run reads (None and non-paths such as ``'estimate'`` are harmless).

    Raises:
        ConfigError: an output resolves to an input (same real path, or same device and inode: a link or a
            hard link), an input lies inside a folder of outputs, an output file name is taken by a directory, or
            a folder of outputs is a symbolic link (its files would be written outside ``output_dir``).
    """
    out = Path(output_dir)
    sources = [(src, *_identity(src)) for src in inputs if src is not None and str(src) != ""]
    files, folders = _expand(out, names)
    for folder in folders:
        if folder.is_symlink():
            raise ConfigError(f"output folder {folder} is a symbolic link; expected a folder inside {out} (outputs "
                              f"are never written through a link out of the output folder); remove the link or "
                              f"pass another --output-dir")
    # the staging folders of a killed run are removed at the start of the next: nothing read may be inside
    staging = [p for p in sorted(out.glob(STAGING_PATTERN)) if not p.is_symlink()] if out.is_dir() else []
    for folder in [*folders, *staging]:
        real = os.path.realpath(folder) + os.sep
        for src, src_real, _ in sources:
            if src_real.startswith(real):
                raise _collision(folder, src, out)
    for target in files:
        if target.is_dir() and not target.is_symlink():
            raise ConfigError(f"output {target} is a directory; expected a file or nothing under that name; move "
                              f"the directory away or pass another --output-dir")
        real, key = _identity(target)
        for src, src_real, src_key in sources:
            if real == src_real or (key is not None and key == src_key):
                raise _collision(target, src, out)


@contextlib.contextmanager
def folder_lock(output_dir: PathLike, holder: str) -> Iterator[None]:
    """Hold the lock of ``output_dir`` (which must exist) for the duration of the block.

    Args:
        output_dir: the output folder.
        holder: what runs (``'ptychopinn refine'``), written into the lock file for the error of a second run.

    Raises:
        ConfigError: another run (another process, or another block of this one) holds the lock; the message
            names it. Without ``fcntl`` (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    folder = Path(output_dir)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0),
                     0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError(f"lock file {path} is not a regular file; expected the lock file of ptychopinn or "
                              "nothing; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, _HOLDER_BYTES).decode("utf-8", "replace").strip() or "an unknown process"
            os.close(fd)
            raise ConfigError(f"output folder {folder} is in use by another run ({text[:200]}); expected one run "
                              "per folder; wait for it to finish or pass another --output-dir") from None
        # The previous holder may have removed the file between our open and flock: lock the current one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder}: pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def remove_stale_temporaries(output_dir: PathLike, names: Iterable[str]) -> list[Path]:
    """Remove what a killed run left in ``output_dir``: the temporary files of the outputs ``names`` (literal
    file names; see :func:`ptychopinn.io.atomic.remove_stale_temp_files`) and staging folders
    (:data:`STAGING_PATTERN`). Links are removed, never followed. Call it only under :func:`folder_lock`.
    Returns the removed paths."""
    out = Path(output_dir)
    removed: list[Path] = []
    if not out.is_dir():
        return removed
    for name in names:
        if name.endswith("/") or _is_pattern(name):
            continue
        target = out / name
        removed += [p for p in remove_stale_temp_files(target.parent, target.name)
                    if fnmatch.fnmatchcase(p.name, TEMP_PATTERN.format(name=target.name))]
    for stale in out.glob(STAGING_PATTERN):
        with contextlib.suppress(OSError):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
            removed.append(stale)
    return removed


def _commit(stage: Path, out: Path, last: str | None) -> None:
    """Rename every file under ``stage`` to the same place under ``out`` (``last`` at the very end)."""
    entries = sorted(stage.iterdir(), key=lambda p: (p.name == last, p.name))
    for entry in entries:
        target = out / entry.name
        if entry.is_dir() and not entry.is_symlink():
            target.mkdir(exist_ok=True)
            _commit(entry, target, None)
        else:
            os.replace(entry, target)


@contextlib.contextmanager
def staged_outputs(output_dir: PathLike, *, last: str | None = None) -> Iterator[Path]:
    """Yield a fresh staging folder inside ``output_dir`` (which must exist); write the run's outputs there.

    When the block succeeds its files are renamed into ``output_dir`` (``last``, the file that says a run
    finished, at the end); when it raises (refusal, error, Ctrl-C) the staging folder is removed and
    ``output_dir`` is as it was. Renames inside one folder never copy, so results appear whole.
    """
    out = Path(output_dir)
    stage = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, suffix=_STAGING_SUFFIX, dir=out))
    try:
        try:
            yield stage
        except OSError as exc:  # a full disk while writing: the message names the file the user asked for
            named = _named_as_final(exc, stage, out)
            if named is exc:
                raise
            raise named from exc
        _commit(stage, out, last)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _named_as_final(exc: OSError, stage: Path, out: Path) -> OSError:
    """``exc`` with its file name moved from the staging folder to the output folder (``exc`` itself otherwise)."""
    name = exc.filename
    if exc.errno is None or not isinstance(name, str) or not name.startswith(str(stage) + os.sep):
        return exc
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(out / Path(name).relative_to(stage)))


@contextlib.contextmanager
def output_run(output_dir: PathLike, names: Sequence[str], inputs: Iterable[PathLike | None] = (), *,
               holder: str, last: str | None = None) -> Iterator[Path]:
    """One run's use of an output folder: :func:`check_outputs_apart` (``names`` and the lock file), create the
    folder, :func:`folder_lock`, :func:`remove_stale_temporaries`, then :func:`staged_outputs` (yields the staging
    folder)."""
    out = Path(output_dir)
    inputs = list(inputs)
    names = [*names, *([LOCK_NAME] if LOCK_NAME not in names else [])]
    check_outputs_apart(out, names, inputs)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, holder):
        remove_stale_temporaries(out, names)
        with staged_outputs(out, last=last) as stage:
            yield stage
