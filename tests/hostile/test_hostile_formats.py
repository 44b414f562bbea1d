"""Malformed HDF5 and CXI scans on the command line: exit code 2, one line on stderr, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychopinn.cli import main

M, N = 12, 16
EV_J = 1.602176634e-19


def _cxi(path: Path, edit: Callable[[h5py.File], None]) -> Path:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = rng.poisson(30.0, (M, N, N)).astype(np.uint32)
        f["entry_1/sample_1/geometry_1/translation"] = np.c_[rng.uniform(-1e-6, 1e-6, (M, 2)), np.zeros(M)]
        f["entry_1/instrument_1/source_1/energy"] = 8000 * EV_J
        f["entry_1/instrument_1/detector_1/distance"] = 1.5
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/instrument_1/detector_1/y_pixel_size"] = 75e-6
        edit(f)
    return path


def _h5(path: Path, edit: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("diffraction", data=np.ones((M, N, N), np.float32), chunks=(4, N, N), compression="gzip")
        f["xcoords"], f["ycoords"] = np.full(M, 9.0), np.full(M, 9.0)
        f["probeGuess"] = np.ones((N, N), np.complex64)
        edit(f)
    return path


def _replace(key: str, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        if key in f:
            del f[key]
        f[key] = value
    return edit


def _drop(key: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[key]
    return edit


def _energy_without_units(f: h5py.File) -> None:
    del f["entry_1/instrument_1/source_1/energy"]
    f["entry_1/instrument_1/source_1/energy"] = 8000.0


CASES = [
    ("cxi-no-frames", _cxi, _drop("entry_1/data_1/data"), "no diffraction frames"),
    ("cxi-frames-rank", _cxi, _replace("entry_1/data_1/data", np.ones((M, N), np.uint32)), "must be frames"),
    ("cxi-no-translation", _cxi, _drop("entry_1/sample_1/geometry_1/translation"), "no scan positions"),
    ("cxi-translation-count", _cxi, _replace("entry_1/sample_1/geometry_1/translation", np.zeros((M - 1, 3))),
     f"has {M - 1} positions but there are {M} frames"),
    ("cxi-translation-rank", _cxi, _replace("entry_1/sample_1/geometry_1/translation", np.zeros(M)), "[M, 2|3]"),
    ("cxi-translation-nan", _cxi, _replace("entry_1/sample_1/geometry_1/translation", np.full((M, 3), np.nan)),
     "NaN"),
    ("cxi-no-energy", _cxi, _drop("entry_1/instrument_1/source_1/energy"), "lacks 'entry_1/instrument_1/source_1"),
    ("cxi-energy-no-units", _cxi, _energy_without_units, "no units attribute"),
    ("cxi-no-distance", _cxi, _drop("entry_1/instrument_1/detector_1/distance"), "detector distance"),
    ("cxi-distance-absurd", _cxi, _replace("entry_1/instrument_1/detector_1/distance", 1e9), "absurd geometry"),
    ("cxi-distance-negative", _cxi, _replace("entry_1/instrument_1/detector_1/distance", -1.0), "positive"),
    ("cxi-pixels-not-square", _cxi, _replace("entry_1/instrument_1/detector_1/y_pixel_size", 55e-6), "square"),
    ("cxi-pixel-string", _cxi, _replace("entry_1/instrument_1/detector_1/x_pixel_size", "75um"), "one real number"),
    ("cxi-mask-shape", _cxi, _replace("entry_1/instrument_1/detector_1/mask", np.zeros((3, 3), np.uint32)),
     "mask' must be integers"),
    ("h5-no-positions", _h5, _drop("ycoords"), "no known layout"),
    ("h5-count-mismatch", _h5, _replace("xcoords", np.full(M + 1, 9.0)), "xcoords has"),
    ("h5-stack-rank", _h5, _replace("diffraction", np.ones((M, N), np.float32)), "must be (M, N, N)"),
    ("h5-complex-stack", _h5, _replace("diffraction", np.ones((M, N, N), np.complex64)), "must be real"),
    ("h5-string-coords", _h5, _replace("xcoords", np.array([b"a"] * M)), "must be real numbers"),
    ("h5-probe-group", _h5, lambda f: (f.__delitem__("probeGuess"), f.create_group("probeGuess")),
     "expected a dataset"),
    ("h5-no-probe", _h5, _drop("probeGuess"), "--probe FILE or --probe estimate"),
]


@pytest.mark.parametrize(("name", "make", "edit", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_malformed_scan_on_the_cli(name: str, make: Callable, edit: Callable, fragment: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = make(tmp_path / ("scan.cxi" if name.startswith("cxi") else "scan.h5"), edit)
    out = tmp_path / "out"
    # `info` describes a scan without a probe (it reports the estimate it would use); the others refuse it
    commands = [] if name == "h5-no-probe" else [["info", str(path)]]
    for argv in (*commands, ["refine", str(path), "--flat", "--iterations", "1", "--output-dir", str(out),
                                       "--quiet"]):
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2, (argv[0], err)
        assert len(err.splitlines()) == 1 and fragment in err, (argv[0], err)
        assert "Traceback" not in err
    assert not out.exists()
