"""What the commands tell the user: plain --help, the summary kept in run.log, units and mask lines that say what
happened, one format for `info`, a picture of an estimated or refined probe."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import counts_of
from ptychopinn.cli import COMMANDS, main
from ptychopinn.data.scan import ScanData
from ptychopinn.io.hdf5 import save_h5_scan
from ptychopinn.io.registry import load_scan


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_documentation_markup(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "``" not in out and not re.search(r":(data|func|class|mod|meth|attr|obj):`", out), out


def test_summary_is_printed_and_kept_in_run_log(tiny_scan_path: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert main(["refine", str(tiny_scan_path), "--flat", "--iterations", "2", "--output-dir", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("refined 24 patterns") and "\n" not in line
    assert f"summary: {line}" in (out / "run.log").read_text()
    assert not (out / "probe.png").exists()  # the scan's own probe, not refined: nothing new to show


def test_integer_counts_are_detected_not_given(tiny_scan: ScanData, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "counts.npz"
    np.savez(path, diffraction=counts_of(tiny_scan), xcoords=tiny_scan.positions[:, 0],
             ycoords=tiny_scan.positions[:, 1], probeGuess=tiny_scan.probe)
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        load_scan(path)
    units = [r.getMessage() for r in caplog.records if "diffraction units" in r.getMessage()]
    assert len(units) == 1 and "detected as intensity" in units[0] and "uint16" in units[0], units
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        load_scan(path, units="intensity")
    units = [r.getMessage() for r in caplog.records if "diffraction units" in r.getMessage()]
    assert len(units) == 1 and "given as intensity" in units[0], units


def test_masked_pixels_are_counted_in_the_log(tiny_scan: ScanData, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    valid = np.ones((32, 32), bool)
    valid[0, :3] = False
    path = save_h5_scan(tmp_path / "masked.h5", dataclasses.replace(tiny_scan, valid_pixels=valid))
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        load_scan(path)
        load_scan(save_h5_scan(tmp_path / "plain.h5", tiny_scan))
    lines = [r.getMessage() for r in caplog.records if "detector mask" in r.getMessage()]
    assert "detector mask: 3 of 1024 pixels of each pattern masked" in lines[0]
    assert "no detector mask: all 1024 pixels" in lines[1]


def test_info_prints_every_file_in_one_format(tiny_scan: ScanData, tiny_scan_path: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    h5 = save_h5_scan(tmp_path / "scan.h5", tiny_scan)
    out = tmp_path / "r"
    assert main(["refine", str(tiny_scan_path), "--flat", "--iterations", "1", "--output-dir", str(out), "-q"]) == 0
    capsys.readouterr()
    line = re.compile(r"^(  )+[^ :][^:]*:( .+)?$")
    for path in (tiny_scan_path, h5, out / "reconstruction.npz"):
        assert main(["info", str(path)]) == 0
        text = capsys.readouterr().out.splitlines()
        assert text[0].startswith(str(path))
        bad = [t for t in text[1:] if not line.match(t) or t.strip() in ("{", "}")]
        assert not bad, bad
        for t in text[1:]:  # a list is one line of JSON; a dict is never printed as JSON
            value = t.split(": ", 1)[1] if ": " in t else ""
            if value.startswith("["):
                json.loads(value)
            assert not value.startswith("{") or value == "{}", t
    assert main(["info", str(tiny_scan_path)]) == 0
    keys = capsys.readouterr().out
    assert "\n  keys:\n    Y:\n" in keys  # nested entries, never a dict as JSON
    assert "\n    diff3d:\n      shape: [24, 32, 32]\n      dtype: float32\n" in keys


def test_probe_picture_when_the_probe_is_estimated_or_refined(tiny_scan_path: Path, tmp_path: Path) -> None:
    est = tmp_path / "est"
    assert main(["refine", str(tiny_scan_path), "--flat", "--probe", "estimate", "--iterations", "1",
                 "--output-dir", str(est), "-q"]) == 0
    assert (est / "probe.png").stat().st_size > 1000
    ref = tmp_path / "ref"
    assert main(["refine", str(tiny_scan_path), "--flat", "--refine-probe", "--iterations", "3",
                 "--output-dir", str(ref), "-q"]) == 0
    assert (ref / "probe.png").stat().st_size > 1000
