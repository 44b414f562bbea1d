"""Refinement speed: microseconds per pattern-iteration of each engine, optionally beside another commit.

Scan: the quality benchmark's unseen test scan (``quality.make_scans``: N=64, 320 x 320 astronaut/coins
object, about 1,369 patterns, 2x oversampled data, 1e9 photons), flat start, probe and positions fixed.
Each engine runs ``--iterations`` passes ``--repeats`` times (the first pass of each run excluded, it
fills caches); the record gives the median and the spread of the per-pass times from ``history``
(iteration time only: set-up and scoring excluded).

``--ref REV`` also times the engine of git revision REV (e.g. ``--ref 71f67e3``, the last rPIE-only main) in
the same run: its ``src/`` is exported to a temporary folder and imported there in a child process with this
interpreter, so both sides see the same machine state; the child runs ``ptychopinn.refine.refine_scan``
with the settings that revision understands. Records alternate between the sides, ``--repeats`` times.

Usage: ``.venv/bin/python benchmarks/refine_throughput.py [--ref REV] [--engines cg,rpie] [--threads 2]``;
one JSON line per (side, engine, repeat) and a summary line per (side, engine).
"""

from __future__ import annotations

import os

from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = "refine_throughput_scan.npz"

# Runs in the child (either side): times refine_scan on the cached scan and prints one JSON line.
_CHILD = r"""
import inspect, json, sys, time
import numpy as np, torch
from ptychopinn.config import RefineConfig
from ptychopinn.data.scan import ScanData
from ptychopinn.refine import refine_scan
path, engine, iterations, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
z = np.load(path)
scan = ScanData(diffraction=z["diffraction"], positions=z["positions"], probe=z["probe"])
fields = inspect.signature(RefineConfig).parameters
kw = {"iterations": iterations}
if "engine" in fields:
    kw.update(engine=engine, warmup=0, tolerance=None)
elif engine != "rpie":
    print(json.dumps({"skipped": f"this revision has no engine {engine!r}"})); sys.exit(0)
res = refine_scan(scan, RefineConfig(**kw))
secs = np.diff([0.0] + [h["seconds"] for h in res.history])[1:]
print(json.dumps({"us_per_pattern_iteration": [1e6 * s / scan.n_points for s in secs],
                  "patterns": int(scan.n_points), "N": int(scan.N)}))
"""


def _scan_file(folder: Path, seed: int) -> Path:
    sys.path.insert(0, str(HERE))
    import numpy as np

    from quality import make_scans

    _, test = make_scans("image", 64, 320, 1e9, 7.0, seed)
    path = folder / CACHE
    np.savez(path, diffraction=test.diffraction, positions=test.positions, probe=test.probe)
    return path


def _export(ref: str, folder: Path) -> Path:
    """``src/`` of git revision ``ref`` under ``folder`` (``git archive``; nothing is checked out here)."""
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=HERE, capture_output=True, text=True,
                          check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", ref, "src"], cwd=root, capture_output=True, check=True).stdout
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def _time(src: Path, scan: Path, engine: str, iterations: int, threads: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, "-c", _CHILD, str(scan), engine, str(iterations), str(threads)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", help="also time this git revision (side 'ref')")
    ap.add_argument("--engines", default="cg,rpie")
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    def emit(rec: dict[str, Any]) -> None:
        print(json.dumps(rec), flush=True)

    emit({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch_threads": args.threads,
          "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "iterations": args.iterations,
          "repeats": args.repeats, "ref": args.ref})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scan = _scan_file(folder, args.seed)
        sides = {"this": HERE.parent / "src"}
        if args.ref:
            sides["ref"] = _export(args.ref, folder / "ref")
        samples: dict[tuple[str, str], list[float]] = {}
        for repeat in range(args.repeats):
            for engine in args.engines.split(","):
                for side, src in sides.items():
                    rec = _time(src, scan, engine, args.iterations, args.threads)
                    if "skipped" in rec:
                        if repeat == 0:
                            emit({"side": side, "engine": engine, **rec})
                        continue
                    per = rec.pop("us_per_pattern_iteration")
                    samples.setdefault((side, engine), []).extend(per)
                    emit({"side": side, "engine": engine, "repeat": repeat, **rec,
                          "median_us_per_pattern_iteration": round(statistics.median(per), 1)})
        for (side, engine), per in samples.items():
            q = statistics.quantiles(per, n=4) if len(per) > 1 else [per[0]] * 3
            emit({"summary": True, "side": side, "engine": engine, "median_us_per_pattern_iteration":
                  round(statistics.median(per), 1), "quartiles_us": [round(q[0], 1), round(q[2], 1)],
                  "passes": len(per)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
