"""Guards of a training run and of untrusted sizes, each through a child process where the process matters: planted
checkpoints never run code (even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1), declared sizes are refused under a
memory rlimit, Ctrl-C exits 130 with resume advice, and two trainings never share an output folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
import hostile_corpus as hc  # noqa: E402

from helpers import PickleMarker  # noqa: E402
from ptychopinn.errors import ConfigError  # noqa: E402
from ptychopinn.training.guards import LOCK_NAME, output_lock  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "PYTHONWARNINGS": "ignore", **extra}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> hc.Shared:
    return hc.build_shared(tmp_path_factory.mktemp("guards"))


def test_planted_checkpoint_never_runs_code(shared: hc.Shared, tmp_path: Path) -> None:
    """``train --resume`` and ``PtychoPINN_Lightning.load_from_checkpoint`` refuse a checkpoint whose pickle would
    create a marker, with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 asking torch to unpickle everything."""
    import torch

    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "epoch": 0, "payload": PickleMarker(marker)}, ckpt)
    env = _env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    proc = subprocess.run([sys.executable, "-m", "ptychopinn.cli", "train", str(shared.scan), "--output-dir",
                           str(tmp_path / "out"), "--epochs", "2", "--quiet", "--resume"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "cannot resume from" in proc.stderr and "weights_only=True" in proc.stderr
    assert not marker.exists()
    code = textwrap.dedent(f"""
        import pickle
        from ptycho_torch.model import PtychoPINN_Lightning
        try:
            PtychoPINN_Lightning.load_from_checkpoint({str(ckpt)!r})
        except pickle.UnpicklingError:
            print("refused")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "refused" in proc.stdout, proc.stderr[-2000:]
    assert not marker.exists()


MEMORY_CHILD = textwrap.dedent("""
    import io, json, resource, sys
    from contextlib import redirect_stderr, redirect_stdout
    from pathlib import Path
    sys.path[:0] = [sys.argv[1], str(Path(sys.argv[1]).parent)]  # hostile_corpus, and the helpers it uses
    import hostile_corpus as hc
    from ptychopinn.cli import main
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
    root = Path(sys.argv[2])
    shared = hc.Shared(scan=root / "scan.npz", archive=root / "wts.h5.zip")
    results = {}
    for case in hc.MEMORY_CASES:
        d = root / case.id
        d.mkdir()
        path = case.make(d, shared)
        for kind in case.cli:
            err, out = io.StringIO(), io.StringIO()
            with redirect_stderr(err), redirect_stdout(out):
                rc = main(hc.cli_argv(kind, path, shared, d / "out")[1])
            results[f"{case.id}/{kind}"] = [rc, err.getvalue()]
    print(json.dumps(results))
""")


def test_declared_sizes_are_refused_under_a_memory_rlimit(shared: hc.Shared, tmp_path: Path) -> None:
    """The memory cases in a child limited to 6 GiB of address space and no PTYCHOPINN_MAX_MEMORY: the limit
    follows the rlimit (3 GiB), every case is one line and exit code 2, none runs out of memory."""
    import json

    for name in ("scan.npz", "wts.h5.zip"):
        (tmp_path / name).write_bytes((shared.scan.parent / name).read_bytes())
    env = {k: v for k, v in _env().items() if k != "PTYCHOPINN_MAX_MEMORY"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(Path(hc.__file__).parent), str(tmp_path),
                           str(6 * 1024**3)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) >= 10
    for key, (rc, err) in results.items():
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and "error:" in lines[0], (key, err)
        assert "memory" in lines[0] or "positions" in lines[0], (key, lines[0])


def test_ctrl_c_exits_130_with_resume_advice(shared: hc.Shared, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ptychopinn.cli", "train", str(shared.scan), "--output-dir",
                             str(out), "--epochs", "100000", "--quiet", "--n-filters-scale", "1", "--logger", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = [line for line in err.strip().splitlines() if line.startswith("ptychopinn")]
    assert proc.returncode == 130, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("ptychopinn train: interrupted: training stopped by Ctrl-C")
    assert "--resume" in lines[0] and "Traceback" not in err
    assert not (out / LOCK_NAME).exists()


def test_two_trainings_never_share_an_output_folder(tmp_path: Path) -> None:
    with output_lock(tmp_path):
        holder = (tmp_path / LOCK_NAME).read_text()
        assert f"pid {os.getpid()}" in holder
        # another process (flock locks are per open file: a child is a real second run)
        code = ("import sys; from pathlib import Path; from ptychopinn.training.guards import output_lock\n"
                "from ptychopinn.errors import ConfigError\n"
                f"try:\n    output_lock(Path({str(tmp_path)!r})).__enter__()\nexcept ConfigError as e:\n    print(e)")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
        assert "is in use by another run" in proc.stdout and f"pid {os.getpid()}" in proc.stdout, proc.stderr
    assert not (tmp_path / LOCK_NAME).exists()
    with output_lock(tmp_path):  # free again once the first run ends
        pass


def test_lock_is_refused_in_process_too(tmp_path: Path) -> None:
    with output_lock(tmp_path), pytest.raises(ConfigError, match="in use by another run"), \
            output_lock(tmp_path):
        pass


def test_first_ctrl_c_waits_for_a_safe_point_and_a_second_stops_at_once() -> None:
    from ptychopinn.training.guards import (
        StopOnInterrupt,
        TrainingInterrupted,
        interrupt_as_exception,
        interrupt_requested,
    )

    stop = StopOnInterrupt()
    before = signal.getsignal(signal.SIGINT)
    with interrupt_as_exception():
        stop.on_train_batch_end()  # nothing pressed yet: training goes on
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes; no exception here (e.g. inside a checkpoint write)
        assert interrupt_requested()
        with pytest.raises(TrainingInterrupted):
            stop.on_train_batch_end()  # ... but at the next safe point
        with pytest.raises(TrainingInterrupted):
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C does not wait
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before


def test_interrupt_message_carries_the_callers_resume_hint(tmp_path: Path) -> None:
    """The ptycho_torch object API cannot resume like `ptychopinn train`; its users get their own hint."""
    from types import SimpleNamespace

    from ptychopinn.training.run import RESUME_HINT, _interrupted_message

    last = tmp_path / "last.ckpt"
    last.write_bytes(b"checkpoint")
    trainer = SimpleNamespace(current_epoch=3)
    assert RESUME_HINT in _interrupted_message(trainer, last)
    msg = _interrupted_message(trainer, last, "its weights load with load_from_checkpoint")
    assert "load_from_checkpoint" in msg and "--resume" not in msg and "epoch 3" in msg and str(last) in msg
    assert "nothing to resume" in _interrupted_message(trainer, tmp_path / "none.ckpt", "x")
