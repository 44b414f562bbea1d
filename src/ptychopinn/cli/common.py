"""Argument types and helpers shared by the command modules (standard library only)."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2 (the usage itself is in
    ``--help``); sub-parsers made by ``add_subparsers`` are of the same class."""

    def error(self, message: str) -> Any:
        text = message.strip().splitlines()[0] if message.strip() else "bad arguments"
        both = _EXCLUSIVE.match(text)
        if both:
            text = (f"{both.group(1)} and {both.group(2)} exclude each other; expected one of them, found both; "
                    "drop one")
        self.exit(2, f"{self.prog}: error: {text}; see {self.prog} --help\n")


_EXCLUSIVE = re.compile(r"^argument (\S+?)(?:/\S+)?: not allowed with argument (\S+?)(?:/\S+)?$")


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def number(text: str) -> float:
    """argparse type: a finite float (accepts 1e6 notation)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def positive_number(text: str) -> float:
    """argparse type: a finite float > 0."""
    v = number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def devices(text: str) -> int | str:
    """argparse type: a positive integer or 'auto'."""
    return "auto" if text == "auto" else positive_int(text)


def set_if(d: dict[str, Any], key: str, value: Any) -> None:
    """Put ``value`` under ``key`` unless it is None (flag not given)."""
    if value is not None:
        d[key] = value


def say(args: argparse.Namespace, text: str) -> None:
    """Print a line to stdout unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def summary(text: str) -> None:
    """The one-line summary at the end of a command: always printed, and kept in ``run.log``."""
    import logging

    print(text, file=sys.stdout, flush=True)
    logging.getLogger("ptychopinn.cli").info("summary: %s", text, extra={"file_only": True})


def crop_centre(text: str) -> tuple[float, float]:
    """argparse type: ``ROW,COL`` detector pixel coordinates (two finite numbers)."""
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        row, col = (number(v) for v in parts)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected ROW,COL (two numbers, detector pixels), got {text!r}") from None
    return row, col


def add_frame_options(p: argparse.ArgumentParser) -> None:
    """``--crop N``, ``--crop-centre ROW,COL``, ``--flip-x``, ``--flip-y``: how a scan's frames and positions are
    read, for every scan format (:mod:`ptychopinn.io.frames`)."""
    g = p.add_argument_group("detector frames and positions (every scan format)")
    g.add_argument("--crop", type=positive_int, metavar="N",
                   help="cut the frames to N x N (even) around the zero order; the positions, pixel size and the "
                        "scan's probe are resampled to the coarser object grid (default: the frames as stored)")
    g.add_argument("--crop-centre", type=crop_centre, metavar="ROW,COL",
                   help="the zero order in detector pixels of the frames as read, e.g. 64,65.5 (default: "
                        "estimated from the mean of the patterns, logged to run.log)")
    g.add_argument("--flip-x", action="store_true",
                   help="mirror the x positions (a stage whose x axis points the other way) (default: off)")
    g.add_argument("--flip-y", action="store_true",
                   help="mirror the y positions (a stage whose y axis points the other way) (default: off)")


def frame_options(args: argparse.Namespace) -> dict[str, Any]:
    """The reader options the user gave, as :func:`ptychopinn.io.registry.load_scan` keywords."""
    opts: dict[str, Any] = {}
    for name in ("crop", "crop_centre"):
        if getattr(args, name, None) is not None:
            opts[name] = getattr(args, name)
    for name in ("flip_x", "flip_y"):
        if getattr(args, name, False):
            opts[name] = True
    return opts


_ROLE = re.compile(r":(?:data|func|class|mod|meth|attr|obj):`~?([^`]+)`")


def help_text(doc: str | None) -> str:
    """A module docstring as command help: reStructuredText markup (double backquotes, ``:func:`x```
    roles) removed, so ``--help`` shows plain text."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], doc or "")
    return text.replace("``", "")


def add_common_options(p: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` and ``-q/--quiet``, the same on every command."""
    g = p.add_argument_group("messages")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more messages on stderr: -v adds progress information, -vv debugging details "
                        "(the output folder's run.log always holds the information level)")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="only errors on stderr and no progress bars (the one-line summary is still printed)")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars: not ``--quiet`` and stderr is a terminal (a bar in a redirected file is noise)."""
    from ptychopinn.logs import progress_enabled

    return progress_enabled(bool(getattr(args, "quiet", False)))


CLOSED_PIPE_EXIT = 141
"""Exit code when stdout is closed early (``ptychopinn info FILE | head``): 128 + SIGPIPE, as a shell tool."""


OutputPlan = tuple[Sequence[str], Sequence["str | os.PathLike[str] | None"]]
"""What a command will write and read: ``(output names relative to --output-dir, input paths)``."""


def command(run: Callable[[argparse.Namespace], int],
            plan: Callable[[argparse.Namespace], OutputPlan | None] | None = None,
            ) -> Callable[[argparse.Namespace], int]:
    """Wrap a command's ``run``: its outputs checked against its inputs, logging set up for it (``run.log`` in
    ``args.output_dir``, warnings on stderr, see :func:`ptychopinn.logs.cli_session`) and a quiet exit when
    stdout is a closed pipe.

    ``plan(args)`` names the outputs (``run.log`` is added) and the input files of this invocation; they are
    compared (:func:`ptychopinn.io.outputs.check_outputs_apart`) before anything is written, ``run.log``
    included. A plan of None means the invocation writes nothing (no ``run.log`` either).
    """

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        from ptychopinn.logs import LOG_NAME, cli_session

        settings = {k: v for k, v in vars(args).items() if k not in ("func", "debug")}
        name = str(getattr(args, "command", None) or run.__module__.rsplit(".", 1)[-1])
        out = getattr(args, "output_dir", None)
        if plan is not None:
            planned = plan(args)
            if planned is None:
                out = None
            elif out is not None:
                from ptychopinn.io.outputs import check_outputs_apart

                names, inputs = planned
                check_outputs_apart(out, [LOG_NAME, *names], inputs)
        try:
            with cli_session(name, verbose=int(getattr(args, "verbose", 0) or 0),
                             quiet=bool(getattr(args, "quiet", False)), output_dir=out, settings=settings):
                rc = run(args)
                sys.stdout.flush()
            return rc
        except BrokenPipeError:
            _silence_stdout()
            return CLOSED_PIPE_EXIT

    return wrapped


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (e.g. captured in tests)
        pass
