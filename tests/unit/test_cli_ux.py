"""Terminal etiquette of the command line: stdout holds the one-line summary only, progress bars go to
stderr and only when it is a terminal (checked through a real pty), run.log records the decisions, a
closed pipe ends quietly, a failed run leaves no empty folder, misleading inputs get the right message."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.cli import main

REPO_SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    return env


def _run_with_tty_stderr(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stdout on a pipe and stderr on a pseudo-terminal: (rc, stdout, stderr)."""
    master, slave = pty.openpty()
    # a fresh pty is 0 columns wide, and tqdm draws nothing into 0 columns: give it a normal size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc = subprocess.Popen([sys.executable, "-m", "ptychopinn.cli", *args], stdout=subprocess.PIPE,
                            stderr=slave, env=_env())
    os.close(slave)
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_train_without_a_terminal_prints_one_line_and_logs_to_run_log(tiny_scan_path, tmp_path, capsys):
    out = tmp_path / "model"  # main() runs with pytest's captured (non-terminal) streams
    assert main(["train", str(tiny_scan_path), "--output-dir", str(out), "--epochs", "1", "--batch-size", "16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trained 1 epochs")
    log = (out / "run.log").read_text()
    for fragment in ("versions: python", "resolved configuration", "diffraction units",
                     "parameters", "epoch 0: train_loss", "finished in"):
        assert fragment in log
    assert "litlogger" not in log


def test_train_bar_goes_to_the_terminal_and_never_to_stdout(tmp_path, tiny_scan_path):
    rc, out, err = _run_with_tty_stderr(["train", str(tiny_scan_path), "--output-dir", str(tmp_path / "m"),
                                         "--epochs", "1", "--batch-size", "16"])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trained 1 epochs")
    assert "\r" not in out and "FLOPs" not in out and "Params" not in out
    assert "Epoch 0" in err and "\r" in err  # the bar, on the terminal
    for noise in ("litlogger", "LeafSpec", "GPU available", "FLOPs"):
        assert noise not in err


def test_infer_draws_no_bar_without_a_terminal(tiny_archive, tiny_scan_path, tmp_path, capsys):
    assert main(["infer", str(tiny_archive), str(tiny_scan_path), "--output-dir", str(tmp_path / "r")]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and "reconstruct" not in cap.err
    assert len(cap.out.strip().splitlines()) == 1
    assert "diffraction units" in (tmp_path / "r" / "run.log").read_text()


def test_network_image_is_the_same_with_and_without_refinement(tiny_archive, tiny_scan_path, tmp_path):
    """network_reconstruction.npz is what `infer --refine 0` writes: same canvas, same synchronisation."""
    alone, refined = tmp_path / "alone", tmp_path / "refined"
    assert main(["infer", str(tiny_archive), str(tiny_scan_path), "--output-dir", str(alone), "--refine", "0",
                 "-q"]) == 0
    assert main(["infer", str(tiny_archive), str(tiny_scan_path), "--output-dir", str(refined), "--refine", "2",
                 "-q"]) == 0
    with np.load(alone / "reconstruction.npz") as a, np.load(refined / "network_reconstruction.npz") as b:
        np.testing.assert_array_equal(a["obj"], b["obj"])
        np.testing.assert_array_equal(a["origin_xy"], b["origin_xy"])
        meta_a, meta_b = json.loads(str(a["_metadata"])), json.loads(str(b["_metadata"]))
    assert meta_a["stitch_sync"] == meta_b["stitch_sync"] == "phase"
    assert meta_b["refinement_start"] == "the same windows without phase synchronisation"


def test_verbose_puts_the_units_decision_on_stderr(tiny_scan_path, tmp_path, capsys):
    assert main(["refine", str(tiny_scan_path), "--flat", "--iterations", "1", "--output-dir", str(tmp_path / "w"),
                 "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "ptychopinn refine: " in err and "diffraction units" in err


def test_every_command_has_verbose_and_quiet(capsys):
    from ptychopinn.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "-v, --verbose" in text and "-q, --quiet" in text, name


def test_info_into_a_closed_pipe_exits_quietly(tiny_scan_path):
    proc = subprocess.Popen([sys.executable, "-m", "ptychopinn.cli", "info", str(tiny_scan_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()  # like `| head` that has already exited
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == "" and proc.returncode == 141


def test_missing_logger_extra_leaves_no_output_folder(tiny_scan_path, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed here")
    out = tmp_path / "new" / "run"
    assert main(["train", str(tiny_scan_path), "--output-dir", str(out), "--logger", "tensorboard"]) == 2
    assert "pip install 'ptychopinn[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_infer_with_a_scan_where_the_model_goes_says_so(tiny_scan_path, tmp_path, capsys):
    rc = main(["infer", str(tiny_scan_path), str(tiny_scan_path), "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "expected a model archive (wts.h5.zip) or a training output directory" in err[0]
    assert f"{tiny_scan_path} is a scan NPZ" in err[0] and "diff3d" in err[0]
    assert not (tmp_path / "r").exists()


def test_every_train_flag_has_help_and_a_default(capsys):
    import argparse

    from ptychopinn.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    for action in train._actions:
        if not action.option_strings or action.dest in ("help", "verbose", "quiet", "output_dir"):
            continue
        assert action.help, action.dest
        assert "default" in action.help, action.dest


@pytest.mark.parametrize(("command", "flag", "constant"), [
    ("train", "--precision", "PRECISIONS"), ("infer", "--precision", "PRECISIONS"),
    ("train", "--accelerator", "ACCELERATORS"), ("infer", "--accelerator", "ACCELERATORS"),
    ("refine", "--accelerator", "ACCELERATORS"), ("train", "--strategy", "STRATEGIES"),
    ("train", "--logger", "LOGGERS"), ("train", "--scheduler", "SCHEDULERS"), ("infer", "--units", "UNITS"),
])
def test_choices_come_from_the_config_constants(command, flag, constant):
    import argparse

    import ptychopinn.config as config
    from ptychopinn.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if flag in a.option_strings)
    assert tuple(action.choices) == tuple(getattr(config, constant))
    assert "16-mixed" in config.PRECISIONS
