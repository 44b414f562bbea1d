"""``ptychopinn info FILE``: what a file holds.

For a model archive (``wts.h5.zip``, or a training output directory): its manifest and full
configuration. For a scan NPZ: keys, shapes, dtypes, and the validation errors, if any. For a
ptychodus product HDF5: object, probe and positions. Exit code 2 when the file is invalid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ptychopinn.cli._common import add_common_options, command


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model archive, scan NPZ or product HDF5 file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="wts.h5.zip / training directory / scan .npz / product .h5")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_common_options(p)
    p.set_defaults(func=command(run))


def _kind(path: Path) -> str:
    import zipfile

    if path.is_dir():
        return "archive"
    if path.suffix == ".h5" or path.suffix == ".hdf5":
        return "product"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        # a '.zip' is never a scan (scans are .npz): describe it as an archive even when members are missing
        if "manifest.json" in names or any(n.endswith(".dill") for n in names) or path.suffix == ".zip":
            return "archive"
        return "scan"
    return "archive" if path.name.endswith(".zip") else "scan"


def describe(path: Path) -> tuple[str, dict[str, Any], bool]:
    """``(kind, description, valid)`` for a file; raises only for a missing path."""
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    kind = _kind(path)
    if kind == "archive":
        from ptychopinn.io.archive import read_manifest, resolve_archive_path

        return kind, read_manifest(resolve_archive_path(path)), True
    if kind == "product":
        from ptychopinn.io.product_h5 import load_product_h5

        prod = load_product_h5(path)
        info = {"object_shape": list(prod.obj.shape), "probe_shape": list(prod.probe.shape),
                "n_positions": int(prod.positions.shape[0])}
        return kind, info, True
    from ptychopinn.io.npz import describe_npz

    d = describe_npz(path)
    return kind, d, bool(d.get("valid", not d.get("errors")))


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
