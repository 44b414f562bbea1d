"""Run every benchmark in this folder, one after the other, and print one JSON object
``{benchmark_name: result}``. Usage: ``.venv/bin/python benchmarks/run_all.py [--quick]``
(or ``make bench``). Each benchmark runs in its own process so that memory and thread settings of
one do not affect another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("train_throughput.py", "infer_throughput.py")


def main(argv: list[str]) -> int:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    results: dict[str, object] = {}
    for name in BENCHMARKS:
        proc = subprocess.run([sys.executable, str(HERE / name), *argv], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            results[name] = {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
        results[name] = json.loads(lines[-1]) if lines else {"error": "no JSON printed"}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
