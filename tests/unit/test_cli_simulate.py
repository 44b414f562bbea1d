"""`ptychopinn simulate`: files written, readable, distinct train/test objects; bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptychopinn.cli import main
from ptychopinn.io.npz import load_npz

SMALL = ["--N", "32", "--object-size", "96", "--nphotons", "1e5", "--quiet"]


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["simulate", "--output-dir", str(tmp_path), *SMALL, *extra])


def test_simulate_writes_train_test_and_preview(tmp_path, capsys):
    assert _run(tmp_path, "--object", "image", "--image", "coins", "--n-points", "30") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "train.npz" in out[0] and "test.npz" in out[0] and "preview.png" in out[0]
    assert "M=30" in out[0] and "N=32" in out[0]
    train, test = load_npz(tmp_path / "train.npz"), load_npz(tmp_path / "test.npz")
    assert train.n_points == 30 and test.n_points == 30 and train.N == 32
    assert train.obj.shape == (96, 96) and train.patches.shape == (30, 32, 32)
    assert not np.allclose(train.obj, test.obj)  # the test scan images another object
    np.testing.assert_array_equal(train.probe, test.probe)  # with the same probe
    assert train.metadata["simulated"] is True and train.metadata["nphotons"] == 1e5
    assert train.metadata["config"]["image_name"] == "coins"
    assert test.metadata["config"]["image_name"] == "coffee"  # the next image in the list
    mean_counts = np.mean(np.sum(train.diffraction.astype(np.float64) ** 2, axis=(1, 2)))
    assert mean_counts == pytest.approx(1e5, rel=0.01)
    import matplotlib.image

    img = matplotlib.image.imread(tmp_path / "preview.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))  # no temporary files left


def test_simulate_lines_spiral_noiseless_uses_test_seed(tmp_path):
    args = ("--object", "lines", "--scan", "spiral", "--no-poisson", "--seed", "4", "--test-seed", "9",
            "--probe", "gaussian", "--probe-diameter", "10")
    assert _run(tmp_path, *args) == 0
    train, test = load_npz(tmp_path / "train.npz"), load_npz(tmp_path / "test.npz")
    assert train.metadata["seed"] == 4 and test.metadata["seed"] == 9
    assert train.metadata["poisson"] is False
    assert not np.allclose(train.obj, test.obj)
    assert train.metadata["config"]["probe_kind"] == "gaussian"
    # noiseless patterns are not whole photon counts
    counts = train.diffraction.astype(np.float64) ** 2
    assert np.abs(counts - np.round(counts)).max() > 0.1


@pytest.mark.parametrize(
    ("extra", "word"),
    [
        (("--overlap", "1.5"), "overlap"),
        (("--N", "31"), "N"),
        (("--image", "nope"), "image_name"),
        (("--image", "moon", "--test-image", "moon"), "test-image"),
        (("--object", "grf", "--seed", "3", "--test-seed", "3"), "test-seed"),
        (("--n-points", "100000"), "n_points"),
    ],
)
def test_bad_values_exit_2_with_one_line(tmp_path, capsys, extra, word):
    assert _run(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err and err.startswith("ptychopinn simulate: error:")
    assert not (tmp_path / "train.npz").exists()


def test_simulate_oversample_is_recorded(tmp_path):
    assert _run(tmp_path, "--object", "grf", "--n-points", "10", "--oversample", "2") == 0
    assert load_npz(tmp_path / "train.npz").metadata["oversample"] == 2
