"""Unwritable output: a read-only output folder and a full disk give exit code 2 and one line naming the file.

A real read-only folder (chmod 0o555) only works for a non-root user (root ignores permissions), so that test
skips itself when ``os.access`` still reports the folder writable. A full disk cannot be produced portably, so
the write that would fail is made to raise ``OSError(ENOSPC)`` (how a full disk surfaces in Python) at the
point where the file system would raise it: while the checkpoint / archive / NPZ bytes are written.
"""

from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ptychopinn.cli import main


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _train(scan: Path, out: Path) -> int:
    return main(["train", str(scan), "--output-dir", str(out), "--epochs", "1", "--n-filters-scale", "1",
                 "--batch-size", "8", "--quiet", "--logger", "none"])


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1, err
    return err[0]


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_read_only_output_dir_is_exit_2_naming_the_path(tmp_path, tiny_scan_path, capsys) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root (or a file system without permissions): chmod 0o555 stays writable")
        assert _train(tiny_scan_path, out) == 2
        line = _one_error_line(capsys)
        assert "Permission denied" in line and str(out) in line
    finally:
        out.chmod(0o755)


def test_not_writable_output_simulated_is_exit_2_naming_the_path(tmp_path, tiny_scan_path, capsys, monkeypatch) -> None:
    """Same as the read-only test but works as root: creating files under the output folder is refused."""
    out = tmp_path / "ro"
    real_mkstemp = __import__("tempfile").mkstemp

    def refuse(*args, dir=None, **kwargs):  # noqa: A002 (tempfile's own argument name)
        if dir is not None and Path(dir).resolve().is_relative_to(out.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    assert _train(tiny_scan_path, out) == 2
    line = _one_error_line(capsys)
    assert line.startswith("ptychopinn train: error:") and "Permission denied" in line and str(out) in line


def test_disk_full_while_writing_checkpoint(tmp_path, tiny_scan_path, capsys, monkeypatch) -> None:
    out = tmp_path / "run"
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):  # the checkpoint writer's open temporary file
            f.write(b"PK\x03\x04partial")
            _disk_full()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert _train(tiny_scan_path, out) == 2
    line = _one_error_line(capsys)
    assert "No space left on device" in line and str(out / "checkpoints" / "last.ckpt") in line
    assert not (out / "checkpoints" / "last.ckpt").exists()  # nothing partial under the final name
    assert _no_temp_files(out)


def test_disk_full_while_writing_archive_keeps_checkpoints(tmp_path, tiny_scan_path, capsys, monkeypatch) -> None:
    out = tmp_path / "run"
    real_writestr = zipfile.ZipFile.writestr

    def writestr(self, info, data, *args, **kwargs):
        if getattr(info, "filename", info).endswith(".safetensors"):
            _disk_full()
        return real_writestr(self, info, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr)
    assert _train(tiny_scan_path, out) == 2
    line = _one_error_line(capsys)
    assert "No space left on device" in line and str(out / "wts.h5.zip") in line
    assert not (out / "wts.h5.zip").exists() and _no_temp_files(out)
    ck = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 0  # the trained state survives: `--resume` writes the archive once space is free


def test_disk_full_while_writing_npz_is_exit_2(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "sim"
    monkeypatch.setattr(np, "savez", _disk_full)
    rc = main(["simulate", "--output-dir", str(out), "--N", "32", "--object-size", "64", "--object", "lines",
               "--n-points", "16", "--quiet"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert "No space left on device" in line
    assert not list(out.glob("*.npz")) and _no_temp_files(out)


def test_disk_full_npz_message_names_the_file(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "sim"
    monkeypatch.setattr(np, "savez", _disk_full)
    main(["simulate", "--output-dir", str(out), "--N", "32", "--object-size", "64", "--object", "lines",
          "--n-points", "16", "--quiet"])
    assert str(out / "train.npz") in _one_error_line(capsys)
