"""Top-level CLI behaviour: help for every command, lazy imports, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ptychopinn.cli import COMMANDS, main


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"ptychopinn {command}" in out


def test_no_command_prints_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_help_does_not_import_heavy_modules() -> None:
    code = ("import sys; from ptychopinn.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'lightning', 'matplotlib', 'h5py') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_importing_core_is_cheap() -> None:
    code = ("import sys, ptychopinn, ptychopinn.config, ptychopinn.data, ptychopinn.io.npz; "
            "print(','.join(m for m in ('torch', 'lightning', 'matplotlib', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_missing_input_file_is_exit_2_one_line(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["infer", str(tmp_path / "nope.zip"), str(tmp_path / "scan.npz"), "--output-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ptychopinn infer: error:")
    assert "Traceback" not in capsys.readouterr().err


def test_info_on_invalid_scan_reports_and_exits_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    p = tmp_path / "bad.npz"
    np.savez(p, diff3d=np.ones((3, 8, 8), np.float32), probeGuess=np.ones((8, 8), np.complex64),
             xcoords=np.zeros(2), ycoords=np.zeros(2))
    assert main(["info", str(p)]) == 2
    out = capsys.readouterr().out
    assert "INVALID" in out


def test_train_bad_flag_value_is_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "x.npz", "--output-dir", "o", "--epochs", "zero"])
    assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err
