"""Shared pieces of the reference-compatible command lines (``python -m ptycho_torch.train`` / ``.inference``)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ptychopinn.errors import ConfigError, PtychoInputError

TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


class StrictParser(argparse.ArgumentParser):
    """argparse parser whose usage errors raise :class:`ConfigError` (one line) instead of exiting."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message.splitlines()[0]}; see --help")


def parse_bool(text: str) -> bool:
    """Strict boolean: true/false, 1/0, yes/no, on/off (case-insensitive); anything else is an error."""
    t = str(text).strip().lower()
    if t in TRUE:
        return True
    if t in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_bool(p: argparse.ArgumentParser, name: str, dest: str, default: bool, off: str, help_text: str) -> None:
    """``--name [BOOL]`` (bare flag = True, 'False' = False) and ``--off`` (= False)."""
    p.add_argument(name, dest=dest, nargs="?", const=True, default=default, type=parse_bool,
                   metavar="BOOL", help=f"{help_text} (default {default})")
    p.add_argument(off, dest=dest, action="store_false", help=f"same as {name} false")


def resolve_accelerator(accelerator: str, device: str | None) -> str:
    """Core accelerator from ``--accelerator`` and the deprecated ``--device`` (used only when the accelerator
    is left at 'auto'; warns). 'tpu' is rejected."""
    if device is not None:
        warnings.warn("--device is deprecated; use --accelerator", DeprecationWarning, stacklevel=3)
        if accelerator == "auto":
            accelerator = device
    if accelerator == "tpu":
        raise ConfigError("--accelerator: expected one of auto, cpu, gpu, cuda, mps, found 'tpu' (TPUs are not "
                          "supported); use cpu or cuda")
    return accelerator


def run_main(prog: str, argv: Sequence[str] | None, body: Callable[[list[str]], int]) -> int:
    """Run ``body(argv)`` and turn bad input into one line on stderr and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        try:
            return body(args)
        except SystemExit as exc:  # argparse printed the help
            return int(exc.code or 0)
    try:
        with warnings.catch_warnings():
            # Deprecation notices of this command line must reach the user of the program.
            warnings.filterwarnings("default", category=DeprecationWarning, module=r"ptycho_torch(\.|$)")
            return body(args)
    except (PtychoInputError, OSError) as exc:  # OSError: missing, unreadable or unwritable files, a full disk
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
