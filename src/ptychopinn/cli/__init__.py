"""The ``ptychopinn`` command line: ``ptychopinn <command> [options]``.

Each command lives in its own module of this package with two functions: ``register(subparsers)``
adds its parser (cheap: no heavy imports) and ``run(args) -> int`` does the work, importing what it
needs only then, so ``ptychopinn --help`` stays fast. :func:`main` turns bad input
(:class:`ptychopinn.errors.PtychoInputError`, a missing file) into a one-line message and exit code
2; ``--debug`` shows the full traceback instead.
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

    parser = argparse.ArgumentParser(
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
    except (PtychoInputError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError) as exc:
        if args.debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ptychopinn {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.debug:
            raise
        print(f"ptychopinn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ptychopinn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
