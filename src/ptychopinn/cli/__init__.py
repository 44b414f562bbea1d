"""The ``ptychopinn`` command line: ``ptychopinn <command> [options]``.

Each command lives in its own module of this package with two functions: ``register(subparsers)``
adds its parser (cheap: no heavy imports) and ``run(args) -> int`` does the work, importing what it
needs only then, so ``ptychopinn --help`` stays fast. :func:`main` turns bad input
(:class:`ptychopinn.errors.PtychoInputError`, a missing file, an unreadable or unwritable file) into a
one-line message and exit code 2, Ctrl-C into exit code 130, and, as a last resort, any other exception
into one line and exit code 1 (an internal error); ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ptychopinn.runtime import prepare_cpu_runtime

COMMANDS = ("simulate", "train", "infer", "refine", "evaluate", "info", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    from ptychopinn import __version__
    from ptychopinn.cli.common import OneLineParser

    parser = OneLineParser(
        prog="ptychopinn",
        description="Physics-informed neural-network ptychography: simulate scans, train without "
                    "ground truth, reconstruct, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"ptychopinn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"ptychopinn.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    prepare_cpu_runtime()
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from ptychopinn.errors import PtychoInputError

    try:
        return int(args.func(args) or 0)
    except (PtychoInputError, OSError) as exc:  # OSError: missing, unreadable or unwritable files, full disk
        if args.debug:
            raise
        print(f"ptychopinn {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        detail = f": {_one_line(exc)}" if str(exc) else ""
        print(f"ptychopinn {args.command}: interrupted{detail}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: bad input is validated (and exit 2) before this
        if args.debug:
            raise
        print(f"ptychopinn {args.command}: error: internal error {type(exc).__name__}: {_one_line(exc)}; "
              "rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1


_MAX_MESSAGE = 1000


def _one_line(exc: BaseException) -> str:
    """The first line of ``str(exc)`` (the type name when empty), at most ``_MAX_MESSAGE`` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= _MAX_MESSAGE else line[:_MAX_MESSAGE - 3] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
