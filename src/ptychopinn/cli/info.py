"""``ptychopinn info FILE``: what a file holds.

The file's format is recognised from its content (see README "Data"). For a model archive
(``wts.h5.zip``, or a training output directory): its manifest and full configuration. For a scan
(NPZ, HDF5, CXI or tike): size, units, physical metadata, and for an NPZ its keys, shapes and dtypes, and
the validation errors, if any; --crop, --crop-centre, --flip-x and --flip-y show the scan as refine and
infer would read it with them. For a reconstruction NPZ or a ptychodus product: object, probe and
positions. Exit code 2 when the file is invalid.

Output: one "name: value" line per entry, a nested entry (keys, metadata) as indented lines below its
name and lists on one line; --json prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ptychopinn.cli.common import add_common_options, add_frame_options, command, frame_options, help_text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="describe a model archive, scan, reconstruction or product file",
                       description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="wts.h5.zip / training directory / scan (.npz, .h5, .cxi) / "
                   "reconstruction.npz / product .h5")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_frame_options(p)
    add_common_options(p)
    p.set_defaults(func=command(run))


def describe(path: Path, **options: Any) -> tuple[str, dict[str, Any], bool]:
    """``(kind, description, valid)`` for a file; raises only for a missing path."""
    from ptychopinn.io.registry import describe_file

    return describe_file(path, **options)


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def format_lines(info: dict[str, Any], indent: int = 2) -> list[str]:
    """``info`` as text lines, the same for every file: ``name: value`` for a scalar, a list on one line as
    JSON, a dict as ``name:`` followed by its entries indented two more spaces (recursively)."""
    pad = " " * indent
    lines = []
    for key, value in info.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines.extend(format_lines(value, indent + 2))
        elif isinstance(value, (list, tuple)):
            lines.append(f"{pad}{key}: {json.dumps(list(value), default=str)}")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    kind, info, valid = describe(path, **frame_options(args))
    if args.json:
        print(json.dumps({"kind": kind, "valid": valid, **info}, indent=2, default=str))
    else:
        print(f"{path}: {kind}{'' if valid else ' (INVALID)'}")
        print("\n".join(format_lines(info)))
    if not valid:
        import sys

        errors = info.get("errors") or ["invalid file"]
        first = str(errors[0]).splitlines()[0] if str(errors[0]) else "invalid file"
        print(f"ptychopinn info: error: {first}", file=sys.stderr)
    return 0 if valid else 2
