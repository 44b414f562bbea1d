"""Where the messages of a command go: ``run.log`` in the output folder, warnings on stderr.

A command run through :func:`cli_session` gets

- ``OUTPUT_DIR/run.log`` (appended to, so a resumed training adds to it): every record at INFO and above
  from this package and the libraries it drives (settings, versions, units decisions, per-epoch losses
  and timings, the error that ended a failed run), with ``-vv`` also DEBUG. It is opened without following
  a symbolic link (``O_NOFOLLOW``) and only as a regular file: a link planted under that name could
  otherwise make the log append to, or create, a file outside the output folder;
- stderr: warnings and errors only, as ``ptychopinn COMMAND: warning: ...``; ``-v`` adds INFO, ``-vv``
  DEBUG, ``-q`` keeps only errors;
- Python warnings (``warnings.warn``) routed into the same two places, less the third-party noise that
  tells a user nothing (:data:`NOISE`).

Progress bars are a separate matter (:func:`progress_enabled`): on stderr, and only when stderr is a
terminal. The library itself configures no handler; only the command line (or a user) does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import platform
import re
import stat
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from ptychopinn.errors import ConfigError, PtychoInputError
from ptychopinn.limits import file_kind

__all__ = ["LOG_NAME", "NOISE", "adopt_lightning_logging", "cli_session", "open_log_file", "progress_enabled",
           "stderr_level"]

LOG_NAME = "run.log"
"""File name of the log written into a command's output folder."""

NOISE = (
    r".*litlogger.*",  # Lightning's advertisement for its cloud logger
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning's _pytree against newer torch: not the user's code
    r".*LeafSpec.*is deprecated.*",
)
"""Regular expressions of messages (log records and warnings) that are dropped everywhere."""

_NOISE_RE = re.compile("|".join(f"(?:{p})" for p in NOISE), re.DOTALL)
_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")

_active_session = False


def stderr_level(verbose: int = 0, quiet: bool = False) -> int:
    """Lowest level shown on stderr: ERROR with ``quiet``, else WARNING, INFO (``-v``) or DEBUG (``-vv``)."""
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def progress_enabled(quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Whether to draw progress bars: not ``quiet`` and ``stream`` (default stderr) is a terminal.

    A bar redirected to a file or pipe fills it with carriage returns, so it is drawn only for a person.
    """
    s = sys.stderr if stream is None else stream
    try:
        return not quiet and bool(s.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return not _NOISE_RE.match(record.getMessage())
        except Exception:  # a record whose message cannot be formatted is shown, not dropped
            return True


class _NotFileOnly(logging.Filter):
    """Drops records marked ``extra={'file_only': True}`` (e.g. the error main() already prints)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


class _StderrFormatter(logging.Formatter):
    """``ptychopinn COMMAND: warning: message`` (INFO and DEBUG lines carry no level word)."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.prefix = f"ptychopinn {command}: " if command else "ptychopinn: "

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = self.prefix + level + record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """``warnings.showwarning`` replacement: one log record per warning, named after its category."""
    if issubclass(category, UserWarning):
        where = ""  # the message says what and where; the source line would only distract
    else:
        where = f" ({category.__name__}, {Path(filename).name}:{lineno})"
    logging.getLogger("py.warnings").warning("%s%s", message, where)


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for name in ("ptychopinn", "numpy", "torch", "lightning"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def adopt_lightning_logging() -> None:
    """Inside a :func:`cli_session`, send Lightning's messages to ``run.log`` instead of its own console handler.

    Lightning attaches a stderr handler to its loggers when it is imported (its "GPU available" lines and
    its advertisements); the command line wants those in ``run.log`` only. Outside a session (a user
    calling the library) nothing is changed.
    """
    if not _active_session:
        return
    for name in _LIGHTNING_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:
                lg.removeHandler(h)
        lg.propagate = True


def open_log_file(path: str | os.PathLike[str], encoding: str | None = "utf-8", errors: str | None = None) -> TextIO:
    """Open ``path`` for appending text, never through a symbolic link and only as a regular file.

    Raises:
        ConfigError: ``path`` is a symbolic link (live or dangling), a folder, a pipe or a device.
    """
    p = Path(path)
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(p, flags, 0o666)
    except OSError as exc:
        if p.is_symlink() or exc.errno == errno.ELOOP:
            raise ConfigError(f"log file {p} is a symbolic link; expected a regular file or nothing under that name "
                              "(the log is never written through a link, which may point outside the output "
                              "folder); remove the link") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):  # a folder; a pipe nobody reads
            kind = "a directory" if exc.errno == errno.EISDIR else "a named pipe"
            raise ConfigError(f"log file {p} is {kind}; expected a regular file or nothing under that name; "
                              "remove it") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"log file {p} is {file_kind(mode)}; expected a regular file or nothing under that "
                              "name; remove it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", encoding=encoding, errors=errors)
    except BaseException:
        os.close(fd)
        raise


class _LogFileHandler(logging.FileHandler):
    """A FileHandler whose file is opened by :func:`open_log_file` (no links, regular files only)."""

    def _open(self) -> TextIO:  # type: ignore[override]
        return open_log_file(self.baseFilename, self.encoding, self.errors)


def _first_missing_ancestor(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet, or None."""
    missing = None
    p = path.absolute()
    while not p.exists():
        missing = p
        if p.parent == p:
            break
        p = p.parent
    return missing


def _remove_if_only_log(out: Path, created: Path) -> None:
    """Remove ``out`` (and the empty folders up to ``created``) when it holds nothing but ``run.log``."""
    try:
        entries = list(out.iterdir())
    except OSError:
        return
    if any(e.name != LOG_NAME for e in entries):
        return
    with contextlib.suppress(OSError):
        (out / LOG_NAME).unlink(missing_ok=True)
        p = out.absolute()
        stop = created.absolute()
        while True:
            p.rmdir()
            if p == stop or p.parent == p:
                break
            p = p.parent


@contextlib.contextmanager
def cli_session(
    command: str,
    *,
    verbose: int = 0,
    quiet: bool = False,
    output_dir: str | os.PathLike[str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Iterator[logging.Logger]:
    """Configure logging for one command and undo it afterwards; yields the ``ptychopinn.cli`` logger.

    Args:
        command: the sub-command name (prefix of the stderr lines).
        verbose: 0 = warnings on stderr, 1 = also INFO, 2+ = also DEBUG (and DEBUG in run.log).
        quiet: only errors on stderr.
        output_dir: folder of ``run.log`` (created); None = no log file.
        settings: the parsed arguments, written to ``run.log`` as JSON.

    When the body raises, the error and its traceback go to ``run.log`` only (the caller prints the one-line
    message), and an output folder that this session created and that holds nothing but ``run.log`` is
    removed, so a failed run leaves no empty folder behind. Refused input (a :class:`PtychoInputError`)
    leaves an existing folder as it was: a ``run.log`` this session started is removed again (one that
    was there before keeps the record of the refusal).
    """
    global _active_session
    root = logging.getLogger()
    saved_level = root.level
    file_level = logging.DEBUG if verbose >= 2 else logging.INFO
    err_level = stderr_level(verbose, quiet)
    noise = _DropNoise()

    err_handler = logging.StreamHandler(sys.stderr)
    err_handler.setLevel(err_level)
    err_handler.setFormatter(_StderrFormatter(command))
    err_handler.addFilter(noise)
    err_handler.addFilter(_NotFileOnly())
    handlers: list[logging.Handler] = [err_handler]

    out = Path(output_dir) if output_dir is not None else None
    created = None
    had_log = False
    if out is not None:
        created = _first_missing_ancestor(out)
        had_log = os.path.lexists(out / LOG_NAME)
        out.mkdir(parents=True, exist_ok=True)
        try:  # opened now: a log that cannot be opened refuses the run before it starts
            file_handler = _LogFileHandler(out / LOG_NAME, mode="a", encoding="utf-8")
        except BaseException:
            if created is not None:
                _remove_if_only_log(out, created)
            raise
        file_handler.setLevel(file_level)
        file_handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        file_handler.addFilter(noise)
        handlers.append(file_handler)

    for h in handlers:
        root.addHandler(h)
    root.setLevel(min(err_level, file_level if out is not None else err_level))
    _active_session = True
    adopt_lightning_logging()  # Lightning may have been imported already (tests, library users)
    log = logging.getLogger("ptychopinn.cli")
    t0 = time.perf_counter()
    failed = refused = False
    try:
        with warnings.catch_warnings():
            for pattern in NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            warnings.showwarning = _showwarning
            log.info("ptychopinn %s: %s", command, " ".join(sys.argv[1:]) or "(called from Python)")
            log.info("versions: %s", _versions())
            if settings:
                log.info("settings: %s", json.dumps(dict(settings), default=str, sort_keys=True))
            yield log
        log.info("finished in %.1f s", time.perf_counter() - t0)
    except BaseException as exc:
        failed = True
        refused = isinstance(exc, PtychoInputError)
        log.error("failed after %.1f s: %s", time.perf_counter() - t0,
                  str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                  exc_info=not isinstance(exc, (KeyboardInterrupt, SystemExit)), extra={"file_only": True})
        raise
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(saved_level)
        _active_session = False
        if failed and out is not None and created is not None:
            _remove_if_only_log(out, created)
        elif refused and out is not None and not had_log:
            with contextlib.suppress(OSError):
                (out / LOG_NAME).unlink(missing_ok=True)
