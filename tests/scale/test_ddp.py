"""DDP on CPU (gloo, 2 processes) through the CLI matches a single-process run with the same global batch.

Making the runs comparable:

* Order: with ``training.sequential_sampling`` the loader does not shuffle, so Lightning's
  ``DistributedSampler(shuffle=False)`` gives rank r the groups ``r, r+2, r+4, ...`` (a shuffled run would
  NOT be comparable: ``DistributedSampler`` draws its own permutation, unlike the single-process
  ``RandomSampler``).
* Same micro-batches: DDP step k averages the gradients of rank 0's half batch ``{8k, 8k+2, 8k+4, 8k+6}``
  and rank 1's ``{8k+1, ...}``. The single-process reference trains on the same scan with its points
  re-ordered so that consecutive batches of 4 are exactly those halves, with ``--accumulate-grad-batches
  2`` (global batch 8 per optimiser step). Accumulation computes ``g0/2 + g1/2``, the DDP all-reduce
  ``(g0 + g1)/2``: equal up to rounding (halving is exact in floating point).
* Why not simply one batch of 8 in one process: the Poisson loss is normalised per batch,
  ``sum(deviance) / sum(counts)``, so a batch of 8 is not the mean of its two halves (gradients differ by
  ~1% for random patterns), and even with equal-count patterns the different summation order gives ~1e-7
  relative gradient differences that Adam turns into O(lr) updates of parameters whose gradient is ~0
  (g / (sqrt(v) + eps)): measured 4e-3 weight and 0.1% loss differences after 2 steps, 7-20% after 16.

Remaining differences come from the reduction order only (the gloo all-reduce, the epoch-loss averaging
over ranks with ``sync_dist``). Tolerances: relative 1e-5 on per-epoch losses, 1e-5 absolute on weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import raster_poisson_scan
from ptychopinn.io.npz import save_npz

pytestmark = pytest.mark.slow

M, N = 64, 32
GLOBAL_BATCH = 8


def _scan(path: Path, interleaved: bool = False) -> Path:
    order = np.arange(M)
    if interleaved:  # batches of GLOBAL_BATCH/2 in file order = the per-rank halves of each DDP step
        order = order.reshape(-1, GLOBAL_BATCH // 2, 2).transpose(0, 2, 1).reshape(-1)
    return save_npz(path, raster_poisson_scan(M, with_obj=False).subset(order))


def _train(data: Path, out: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("ptychopinn")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "ptychopinn"]),
           "train", str(data), "--output-dir", str(out), "--config", str(config), "--accelerator", "cpu",
           "--quiet", *extra]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               MASTER_PORT=str(29500 + os.getpid() % 1000))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _ckpt(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _history(ck: dict) -> list[float]:
    for key, state in ck.get("callbacks", {}).items():
        if "LossHistory" in key:
            return [float(x) for x in state["train_loss"]]
    raise AssertionError(f"no LossHistory in checkpoint callbacks {list(ck.get('callbacks', {}))}")


def _config(path: Path, epochs: int) -> Path:
    path.write_text(json.dumps({
        "model": {"n_filters_scale": 1},
        "training": {"nepochs": epochs, "sequential_sampling": True, "val_fraction": 0.0, "seed": 3,
                     "learning_rate": 1e-3},
        "execution": {"logger": "none", "num_threads": 1},
    }))
    return path


def test_ddp_two_processes_match_single_and_resume(tmp_path: Path) -> None:
    data = _scan(tmp_path / "scan.npz")
    data_single = _scan(tmp_path / "scan_interleaved.npz", interleaved=True)
    cfg2 = _config(tmp_path / "cfg2.json", 2)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _train(data_single, single, cfg2, "--batch-size", str(GLOBAL_BATCH // 2), "--accumulate-grad-batches", "2",
           "--devices", "1")
    _train(data, ddp, cfg2, "--batch-size", str(GLOBAL_BATCH // 2), "--devices", "2", "--strategy", "ddp")

    a, b = _ckpt(single), _ckpt(ddp)
    ha, hb = _history(a), _history(b)
    assert len(ha) == len(hb) == 2
    np.testing.assert_allclose(hb, ha, rtol=1e-5)
    assert a["global_step"] == b["global_step"] == 2 * M // GLOBAL_BATCH
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    worst = max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].is_floating_point())
    assert worst < 1e-5, f"final weights differ by {worst:g}"

    # --resume under DDP: continue the 2-epoch DDP run to 3 epochs; history keeps the first two epochs.
    cfg3 = _config(tmp_path / "cfg3.json", 3)
    _train(data, ddp, cfg3, "--batch-size", str(GLOBAL_BATCH // 2), "--devices", "2", "--strategy", "ddp",
           "--resume")
    c = _ckpt(ddp)
    hc = _history(c)
    assert len(hc) == 3 and c["epoch"] == 2
    np.testing.assert_allclose(hc[:2], hb, rtol=1e-6)
    assert c["global_step"] == 3 * M // GLOBAL_BATCH
