"""``python -m ptycho_torch.inference``: reconstruct a scan with a trained model (reference flags).

Example::

    python -m ptycho_torch.inference --model_path out --test_data test.npz --output_dir recon --n_groups 256

``--model_path`` is a training output directory (holding ``wts.h5.zip``) or the archive itself. Writes
``reconstructed_amplitude.png``, ``reconstructed_phase.png`` and ``reconstruction.npz`` (complex ``obj`` [H, W]
on the scan's object pixel grid, ``coverage``, ``origin_xy``, ``positions``). Bad input: one line on stderr, exit
code 2.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptycho_torch._cli import ACCELERATORS, StrictParser, resolve_accelerator, run_main
from ptychopinn.cli.common import positive_int
from ptychopinn.errors import ConfigError

__all__ = ["OUTPUTS", "build_args", "build_parser", "main"]

OUTPUTS = ("reconstruction.npz", "reconstructed_amplitude.png", "reconstructed_phase.png")
"""What the command writes into ``--output_dir``; never one of its inputs, and only when it succeeds."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (usage errors raise ConfigError)."""
    p = StrictParser(prog="python -m ptycho_torch.inference", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="training output directory or wts.h5.zip")
    p.add_argument("--test_data", required=True, help="scan NPZ to reconstruct")
    p.add_argument("--output_dir", required=True, help="directory for the images and the NPZ (created)")
    p.add_argument("--n_groups", type=positive_int, default=None, help="use the first N patterns (default: all)")
    p.add_argument("--n_images", type=positive_int, default=None, help="deprecated alias of --n_groups")
    p.add_argument("--accelerator", choices=ACCELERATORS, default="auto")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="deprecated: use --accelerator")
    p.add_argument("--inference-batch-size", dest="batch_size", type=positive_int, default=64)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def build_args(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``argv`` into ``{'model_path', 'test_data', 'output_dir', 'n_groups', 'inference', 'quiet'}``."""
    from ptychopinn.config import InferenceConfig

    a = build_parser().parse_args(list(argv))
    n = a.n_groups
    if a.n_images is not None:
        warnings.warn("--n_images is deprecated; use --n_groups", DeprecationWarning, stacklevel=2)
        if n is not None and n != a.n_images:
            raise ConfigError(f"--n_images {a.n_images} contradicts --n_groups {n}; give only --n_groups")
        n = a.n_images
    accelerator = resolve_accelerator(a.accelerator, a.device)
    return {"model_path": Path(a.model_path), "test_data": Path(a.test_data), "output_dir": Path(a.output_dir),
            "n_groups": n, "inference": InferenceConfig.reference(batch_size=a.batch_size, accelerator=accelerator),
            "quiet": bool(a.quiet)}


def _run(argv: list[str]) -> int:
    from ptychopinn.data.scan import ScanData
    from ptychopinn.inference.predict import reconstruct
    from ptychopinn.io.reconstruction import save_reconstruction_npz
    from ptychopinn.io.registry import load_scan
    from ptychopinn.models.persist import load_model
    from ptychopinn.plots import save_amplitude_png, save_phase_png
    from ptychopinn.workflows import output_run

    cfg = build_args(argv)
    for key in ("model_path", "test_data"):
        if not cfg[key].exists():
            raise FileNotFoundError(f"{key.replace('_', ' ')} not found: {cfg[key]}")
    out = cfg["output_dir"]
    inputs = [cfg["model_path"], cfg["test_data"]]
    loaded = load_model(cfg["model_path"])
    scan = load_scan(cfg["test_data"], units="auto")
    shape = tuple(scan.obj.shape) if scan.obj is not None else None
    n = cfg["n_groups"]
    if n is not None and n < scan.n_points:
        scan = ScanData.from_arrays(scan.diffraction[:n], scan.positions[:n], scan.probe, units="amplitude")
    icfg = cfg["inference"]
    with output_run(out, OUTPUTS, inputs, holder="ptycho_torch.inference", last="reconstruction.npz") as stage:
        recon = reconstruct(loaded.model, scan, icfg, object_shape=shape, progress=not cfg["quiet"])
        save_reconstruction_npz(stage / "reconstruction.npz", recon, extra={"model": str(loaded.path)})
        save_amplitude_png(recon.obj, stage / "reconstructed_amplitude.png", title="Reconstructed amplitude")
        save_phase_png(recon.obj, stage / "reconstructed_phase.png", title="Reconstructed phase")
    npz = out / "reconstruction.npz"
    print(f"reconstructed {recon.n_patterns} patterns into a {recon.obj.shape[0]}x{recon.obj.shape[1]} object; "
          f"wrote {out / 'reconstructed_amplitude.png'}, {out / 'reconstructed_phase.png'}, {npz}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input)."""
    return run_main("ptycho_torch.inference", argv, _run)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
