"""Reading a compressed HDF5 scan far larger than a batch keeps anonymous memory bounded (child process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

M, N = 2048, 64  # float32 amplitude stack: 32 MiB, 64 batches of 32 patterns

_CHILD = r"""
import json, sys, threading
import numpy as np
import ptychopinn.io.schema as schema
from ptychopinn.io.registry import load_scan
import h5py, hdf5plugin  # imported before the baseline so their code pages do not count

def kb(field):
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'):
            return int(line.split()[1])

schema.BATCH_BYTES = 1 << 20  # 32 patterns of 64 x 64 at 8 bytes per pixel
peak = [kb('RssAnon')]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], kb('RssAnon')); stop.wait(0.005)
base = kb('RssAnon')
t = threading.Thread(target=sample, daemon=True); t.start()
scan = load_scan(sys.argv[1])
stop.set(); t.join()
first = float(scan.diffraction[0].astype(np.float64).sum()); last = float(scan.diffraction[-1].astype(np.float64).sum())
print(json.dumps({'growth_kb': max(peak[0], kb('RssAnon')) - base, 'first': first, 'last': last,
                  'units': scan.metadata['input_units']}))
"""


def test_compressed_hdf5_read_with_bounded_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("diffraction", shape=(M, N, N), dtype=np.uint16, chunks=(16, N, N), compression="gzip")
        for lo in range(0, M, 256):
            d[lo:lo + 256] = rng.poisson(5.0, (256, N, N)).astype(np.uint16)
        f["xcoords"], f["ycoords"] = np.full(M, 40.0), np.full(M, 40.0)
        f["probeGuess"] = np.ones((N, N), np.complex64)
        first = np.sqrt(d[0].astype(np.float64)).astype(np.float32).astype(np.float64).sum()
        last = np.sqrt(d[-1].astype(np.float64)).astype(np.float32).astype(np.float64).sum()
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", PTYCHOPINN_MMAP_THRESHOLD="1M")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["units"] == "intensity"
    assert abs(res["first"] - first) < 1e-3 * first and abs(res["last"] - last) < 1e-3 * last
    stack_kb = M * N * N * 4 // 1024
    # the decoded stack (32 MiB) lives in a temporary file; memory holds a batch and validation temporaries
    assert res["growth_kb"] < stack_kb // 2, (res, stack_kb)  # measured: about 13 MiB
