"""SIGKILL ``ptychopinn train`` at three points, then ``--resume``: no work beyond the current epoch is lost and
no corrupt or partial file is ever left under a final name.

Kill points:
  (a) mid-epoch: the test polls for ``checkpoints/last.ckpt`` (end of epoch 0) and kills the process shortly
      after, while epoch 1 runs (the checkpoint is verified to still say epoch 0, so the kill really was
      inside epoch 1 and not after it).
  (b) mid-checkpoint-write and (c) mid-archive-write: a checkpoint or an archive is written in a few
      milliseconds, too fast to hit by polling. The child process therefore runs the CLI through a small
      wrapper (below, test code only) that lets the real writer put half of the bytes into its temporary
      file and then sends SIGKILL to its own process: a real kill at a deterministic point of the write.
      Nothing there depends on how long an epoch takes, so (b) and (c) train on the suite's tiny scan;
      only (a) needs the larger scan below.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptychopinn.config import SimulationConfig
from ptychopinn.io.npz import save_npz
from ptychopinn.models.persist import load_model
from ptychopinn.simulate import simulate_scan

pytestmark = pytest.mark.slow

_ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}

# Runs ``ptychopinn`` with one writer patched to die half-way through a write. argv[1] is the kill point.
_WRAPPER = r'''
import io, os, signal, sys, zipfile
import torch

point = sys.argv[1]
out = sys.argv[sys.argv.index("--output-dir") + 1]

def die(fh, data):
    fh.write(data[: len(data) // 2])  # half of the real bytes reach the temporary file ...
    fh.flush()
    os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)  # ... then the process is killed

if point == "checkpoint":
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        ckdir = os.path.join(out, "checkpoints")
        writing_last = any(n.startswith(".last.ckpt.") for n in os.listdir(ckdir))
        to_file = not isinstance(f, (str, os.PathLike))
        if isinstance(obj, dict) and obj.get("epoch", 0) >= 1 and writing_last and to_file:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            die(f, buf.getvalue())
        return real_save(obj, f, *args, **kwargs)
    torch.save = save
elif point == "archive":
    real_writestr = zipfile.ZipFile.writestr
    def writestr(self, info, data, *args, **kwargs):
        name = getattr(info, "filename", info)
        if name.endswith(".safetensors"):
            self.fp.flush()
            die(self.fp, bytes(data))
        return real_writestr(self, info, data, *args, **kwargs)
    zipfile.ZipFile.writestr = writestr

from ptychopinn.cli import main
sys.exit(main(sys.argv[2:]))
'''


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory) -> Path:
    """A scan whose epochs take a few seconds, so that a timed kill lands inside one."""
    scan = simulate_scan(SimulationConfig(N=32, object_size=96, object_kind="lines", overlap=0.5, nphotons=1e6,
                                          seed=1))
    return save_npz(tmp_path_factory.mktemp("scan") / "scan.npz", scan)


def _train_args(scan: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    # The slower reference generator keeps an epoch a few seconds long, so the timed kills land mid-epoch.
    return ["train", str(scan), "--output-dir", str(out), "--epochs", str(epochs), "--n-filters-scale", "1",
            "--generator", "cnn", "--batch-size", "8", "--quiet", *extra]


def _cli(args: list[str], point: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", _WRAPPER, point, *args] if point else [sys.executable, "-m", "ptychopinn.cli", *args]
    return subprocess.Popen(cmd, env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ckpt_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def _logged_epochs(out: Path) -> list[list[int]]:
    """Epochs recorded by each logs/version_K/metrics.csv (one list per run, in run order)."""
    runs = []
    for version in sorted((out / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1])):
        f = version / "metrics.csv"
        rows = list(csv.DictReader(f.open())) if f.is_file() else []
        runs.append(sorted({int(r["epoch"]) for r in rows if r.get("train_loss")}))
    return runs


def _assert_clean(out: Path) -> None:
    """Every checkpoint loads (weights only) and no temporary file is left anywhere in the run folder."""
    ckpts = sorted((out / "checkpoints").glob("*.ckpt"))
    assert ckpts, "no checkpoint written"
    for ck in ckpts:
        torch.load(ck, map_location="cpu", weights_only=True)
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert not leftovers, leftovers


def _resume_and_check(scan: Path, out: Path, epochs: int, saved_epoch: int) -> None:
    runs_before = len(_logged_epochs(out))
    proc = _cli(_train_args(scan, out, epochs, "--resume"))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"trained {epochs} epochs" in stdout
    loaded = load_model(out / "wts.h5.zip")
    assert loaded.metadata["epochs_completed"] == epochs
    assert len(loaded.metadata["history"]["train_loss"]) == epochs
    assert all(torch.isfinite(t).all() for t in loaded.model.state_dict().values() if t.is_floating_point())
    # Only the epochs after the saved one were trained again (the resumed run is the last log version).
    new_epochs = [e for run in _logged_epochs(out)[runs_before:] for e in run]
    assert new_epochs == list(range(saved_epoch + 1, epochs))
    assert _ckpt_epoch(out / "checkpoints" / "last.ckpt") == epochs - 1
    _assert_clean(out)


def test_kill_mid_epoch_then_resume(tmp_path, scan_file) -> None:
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    proc = _cli(_train_args(scan_file, out, 2))
    deadline = time.monotonic() + 240
    while not last.is_file():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "epoch 0 never finished"
        time.sleep(0.05)
    time.sleep(0.8)  # into epoch 1 (an epoch takes a few seconds here)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert _ckpt_epoch(last) == 0, "the kill came after epoch 1 had finished; not a mid-epoch kill"
    assert not (out / "wts.h5.zip").exists()
    _resume_and_check(scan_file, out, 2, saved_epoch=0)


def test_kill_while_writing_checkpoint_keeps_previous_and_resumes(tmp_path, tiny_scan_path) -> None:
    out = tmp_path / "run"
    proc = _cli(_train_args(tiny_scan_path, out, 2), point="checkpoint")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    ckdir = out / "checkpoints"
    # The kill hit the temporary file of epoch 1's last.ckpt; the file under the final name is epoch 0's, whole.
    assert len(list(ckdir.glob(".last.ckpt.*.tmp"))) == 1
    assert _ckpt_epoch(ckdir / "last.ckpt") == 0
    _resume_and_check(tiny_scan_path, out, 2, saved_epoch=0)


def test_kill_while_writing_archive_leaves_no_partial_archive_and_resumes(tmp_path, tiny_scan_path) -> None:
    out = tmp_path / "run"
    proc = _cli(_train_args(tiny_scan_path, out, 1), point="archive")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    assert len(list(out.glob(".wts.h5.zip.*.tmp"))) == 1  # the half-written temporary archive ...
    assert not (out / "wts.h5.zip").exists()  # ... never reached the final name
    assert _ckpt_epoch(out / "checkpoints" / "last.ckpt") == 0
    # Training had finished: the resume trains no epoch, only writes the archive (and removes the stale temp).
    _resume_and_check(tiny_scan_path, out, 1, saved_epoch=0)
