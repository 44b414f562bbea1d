"""``ptychopinn evaluate RECONSTRUCTION.npz TRUTH.npz --output-dir DIR``: quality against ground truth.

TRUTH is a scan with ``objectGuess`` (NPZ or HDF5, e.g. from ``ptychopinn simulate``), a reconstruction NPZ
or a ptychodus product file.
Over the scanned region: the global phase offset is removed (and with ``--remove-ramp`` a phase
ramp), the images are aligned by sub-pixel cross-correlation, then amplitude and phase MAE, PSNR
(peak = data range of the truth), SSIM, Pearson correlation and FRC resolution (0.5 and 1/2-bit
thresholds, in pixels) are written to ``DIR/metrics.json`` with ``DIR/comparison.png`` and
``DIR/frc.png``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ptychopinn.cli.common import add_common_options, command, help_text, summary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("evaluate", help="compare a reconstruction with the ground truth",
                       description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reconstruction", metavar="RECONSTRUCTION.npz", help="output of `ptychopinn infer`")
    p.add_argument("truth", metavar="TRUTH.npz", help="scan with objectGuess, reconstruction NPZ or product .h5")
    p.add_argument("--output-dir", required=True, help="directory for metrics.json and figures")
    p.add_argument("--remove-ramp", action="store_true", help="also remove a linear phase ramp")
    add_common_options(p)
    p.set_defaults(func=command(run, plan))


def format_metrics(m: dict[str, Any]) -> str:
    """One line with the key numbers of a metrics dict."""
    def f(v: object) -> str:
        return "n/a" if v is None else f"{v:.3g}"

    a, p = m["amplitude"], m["phase"]
    return (f"amplitude SSIM {f(a.get('ssim'))} PSNR {f(a.get('psnr'))} dB MAE {f(a.get('mae'))}; "
            f"phase SSIM {f(p.get('ssim'))} PSNR {f(p.get('psnr'))} dB MAE {f(p.get('mae'))} rad; "
            f"FRC(1/2-bit) amplitude {f(a.get('frc_resolution_px_half_bit'))} px")


def plan(args: argparse.Namespace) -> tuple[tuple[str, ...], list[str]]:
    """The outputs of this invocation and the files it reads (compared before anything is written)."""
    from ptychopinn.workflows import evaluate_outputs

    return evaluate_outputs(), [args.reconstruction, args.truth]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ptychopinn.workflows import evaluate_reconstruction

    m = evaluate_reconstruction(args.reconstruction, args.truth, output_dir=args.output_dir,
                                remove_ramp=args.remove_ramp)
    out = Path(args.output_dir)
    summary(f"{format_metrics(m)}; wrote {out / 'metrics.json'}, {out / 'comparison.png'}, {out / 'frc.png'}")
    return 0
