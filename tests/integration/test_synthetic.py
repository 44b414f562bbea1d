"""Training before the sample (``train --synthetic``): generated objects scanned with a real scan's probe,
positions, N and dose; the scan's patterns are never trained on; the archive serves ``infer``; bad input is
refused on one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.cli import main
from ptychopinn.data.normalize import mean_pattern_energy
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError
from ptychopinn.simulate.synthetic import parse_kinds, synthetic_training_scan


def test_synthetic_scan_keeps_probe_positions_and_dose(tiny_scan: ScanData) -> None:
    syn = synthetic_training_scan(tiny_scan, kinds=("lines", "grf"), objects=3, seed=0)
    m, n = tiny_scan.n_points, tiny_scan.N
    assert syn.diffraction.shape == (3 * m, n, n) and syn.obj is None and syn.patches is None
    np.testing.assert_array_equal(syn.probe, tiny_scan.probe)
    np.testing.assert_array_equal(syn.scan_index, np.repeat([0, 1, 2], m))
    side = syn.metadata["synthetic"]["object_side_px"]
    for k in range(3):
        # the scan's geometry moved as a whole: every pair of points keeps its offset; objects lie far apart
        part = syn.positions[k * m:(k + 1) * m]
        np.testing.assert_allclose(part - tiny_scan.positions, np.tile(part[0] - tiny_scan.positions[0], (m, 1)),
                                   atol=1e-9)
        np.testing.assert_allclose(part - syn.positions[:m], [[2.0 * side * k, 0.0]] * m, atol=1e-9)
        # the scan's mean counts per pattern (Poisson noise on 24 patterns of 1e6 counts: far below 1 %)
        dose = mean_pattern_energy(syn.diffraction[k * m:(k + 1) * m])
        assert dose == pytest.approx(mean_pattern_energy(tiny_scan.diffraction), rel=0.01)
    # new patterns, one object each: neither the scan's nor copies of one another
    assert not np.allclose(syn.diffraction[:m], tiny_scan.diffraction, rtol=0.05)
    assert not np.allclose(syn.diffraction[:m], syn.diffraction[m:2 * m], rtol=0.05)
    assert syn.metadata["synthetic"]["kinds"] == ["lines", "grf"]


def test_the_scans_patterns_are_only_read_for_their_dose(tiny_scan: ScanData) -> None:
    shuffled = dataclasses.replace(tiny_scan, diffraction=tiny_scan.diffraction[::-1].copy())
    a = synthetic_training_scan(tiny_scan, objects=1, seed=4)
    b = synthetic_training_scan(shuffled, objects=1, seed=4)
    np.testing.assert_allclose(a.diffraction, b.diffraction, rtol=1e-5)


def test_unknown_kinds_name_the_valid_ones() -> None:
    assert parse_kinds("grf, lines,grf") == ("grf", "lines")
    for bad in ("lines,trees", "", ["image", "x"]):
        with pytest.raises(ConfigError, match="lines, grf, image"):
            parse_kinds(bad)


@pytest.mark.slow
def test_train_synthetic_then_infer_the_scan(tiny_scan_path: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from ptychopinn.models.persist import load_model

    run, rec = tmp_path / "run", tmp_path / "rec"
    assert main(["train", str(tiny_scan_path), "--synthetic", "--synthetic-kinds", "grf", "--synthetic-objects", "2",
                 "--output-dir", str(run), "--epochs", "1", "--batch-size", "8", "--n-filters-scale", "1",
                 "--quiet"]) == 0
    assert "on generated objects (--synthetic)" in capsys.readouterr().out
    meta = load_model(run).metadata
    assert meta["synthetic"]["kinds"] == ["grf"] and meta["synthetic"]["objects"] == 2
    assert meta["train_points"] == 2 * 24
    assert main(["infer", str(run), str(tiny_scan_path), "--output-dir", str(rec), "--refine", "0", "--quiet"]) == 0
    with np.load(rec / "reconstruction.npz", allow_pickle=False) as z:
        assert np.isfinite(z["obj"]).all() and np.abs(z["obj"]).max() > 0


def _scan_without_probe(scan_path: Path, out: Path) -> Path:
    with np.load(scan_path, allow_pickle=False) as z:
        np.savez(out, **{k: z[k] for k in z.files if k != "probeGuess"})
    return out


@pytest.mark.parametrize("flags, says", [
    (["--synthetic", "--synthetic-kinds", "lines,trees"], "expected a comma-separated list of lines, grf, image"),
    (["--synthetic", "--synthetic-objects", "0"], "expected a positive integer"),
])
def test_cli_refuses_bad_synthetic_flags(flags: list[str], says: str, tiny_scan_path: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tiny_scan_path), "--output-dir", str(tmp_path / "o"), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]


@pytest.mark.slow
def test_cli_synthetic_needs_a_probe(tiny_scan_path: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    bare = _scan_without_probe(tiny_scan_path, tmp_path / "bare.npz")
    assert main(["train", str(bare), "--synthetic", "--output-dir", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # the reader's own message: every command refuses a scan without a probe the same way
    assert len(err) == 1 and "a scan without a probe needs --probe FILE or --probe estimate" in err[0]
    # with an estimated probe it trains (what the estimate is worth is README "Probe")
    assert main(["train", str(bare), "--synthetic", "--probe", "estimate", "--output-dir", str(tmp_path / "e"),
                 "--epochs", "1", "--n-filters-scale", "1", "--quiet"]) == 0
    assert main(["train", str(tiny_scan_path), "--synthetic-objects", "2", "--output-dir", str(tmp_path / "p"),
                 "--quiet"]) == 2
    assert "only apply to --synthetic" in capsys.readouterr().err
