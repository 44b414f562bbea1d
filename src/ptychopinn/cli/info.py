"""``ptychopinn info FILE``: what a file holds.

The file's format is recognised from its content (see README "Data"). For a model archive
(``wts.h5.zip``, or a training output directory): its manifest and full configuration. For a scan
(NPZ, HDF5 or CXI): size, units, physical metadata, and for an NPZ its keys, shapes and dtypes, and the
validation errors, if any. For a reconstruction NPZ or a ptychodus product: object, probe and
positions. Exit code 2 when the file is invalid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ptychopinn.cli.common import add_common_options, command


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="describe a model archive, scan, reconstruction or product file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="wts.h5.zip / training directory / scan (.npz, .h5, .cxi) / "
                   "reconstruction.npz / product .h5")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_common_options(p)
    p.set_defaults(func=command(run))


def describe(path: Path) -> tuple[str, dict[str, Any], bool]:
    """``(kind, description, valid)`` for a file; raises only for a missing path."""
    from ptychopinn.io.registry import describe_file

    return describe_file(path)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    kind, info, valid = describe(path)
    if args.json:
        print(json.dumps({"kind": kind, "valid": valid, **info}, indent=2, default=str))
    else:
        print(f"{path}: {kind}{'' if valid else ' (INVALID)'}")
        for key, value in info.items():
            text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
            if len(text) > 300:
                text = json.dumps(value, indent=2, default=str)
            print(f"  {key}: {text}")
    if not valid:
        import sys

        errors = info.get("errors") or ["invalid file"]
        first = str(errors[0]).splitlines()[0] if str(errors[0]) else "invalid file"
        print(f"ptychopinn info: error: {first}", file=sys.stderr)
    return 0 if valid else 2
