"""End to end through the command line: simulate -> train -> archive -> (fresh process) infer ->
evaluate, with a quality floor on the reconstruction of an object the network never saw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    sim, run, rec, ev = root / "sim", root / "run", root / "rec", root / "eval"
    assert main(["simulate", "--output-dir", str(sim), "--N", "32", "--object-size", "96", "--object", "lines",
                 "--overlap", "0.6", "--nphotons", "1e6", "--seed", "3", "--quiet"]) == 0
    assert main(["train", str(sim / "train.npz"), "--test", str(sim / "test.npz"), "--output-dir", str(run),
                 "--epochs", "12", "--batch-size", "8", "--n-filters-scale", "1", "--learning-rate", "3e-3",
                 "--scheduler", "cosine", "--seed", "0", "--quiet"]) == 0
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "ptychopinn.cli", "infer", str(run), str(sim / "test.npz"),
                           "--output-dir", str(rec), "--quiet", "--product", "--refine", "0"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "reconstructed" in proc.stdout
    assert main(["evaluate", str(rec / "reconstruction.npz"), str(sim / "test.npz"), "--output-dir", str(ev)]) == 0
    return {"sim": sim, "run": run, "rec": rec, "eval": ev}


def test_training_outputs(pipeline: dict[str, Path]) -> None:
    run = pipeline["run"]
    assert (run / "wts.h5.zip").stat().st_size > 100_000
    assert (run / "checkpoints" / "last.ckpt").is_file()
    csvs = list((run / "logs").rglob("metrics.csv"))
    assert csvs and "val_loss" in csvs[0].read_text().splitlines()[0]
    import matplotlib.image as mpimg

    img = mpimg.imread(run / "checkpoints" / "loss_curves.png")
    assert img.shape[0] > 100 and img.std() > 0


def test_reconstruction_file_and_orientation(pipeline: dict[str, Path]) -> None:
    with np.load(pipeline["rec"] / "reconstruction.npz", allow_pickle=False) as z:
        obj, cov = z["obj"], z["coverage"]
        assert "x = column" in str(z["pixel_convention"])
    with np.load(pipeline["sim"] / "test.npz", allow_pickle=False) as t:
        truth = t["objectGuess"]
    assert obj.shape == truth.shape and obj.dtype == np.complex64
    m = cov > 0
    # the reconstructed amplitude correlates with the truth as placed, and much worse with a flipped,
    # mirrored or transposed truth (the reference system has such orientation bugs)
    ra, ta = np.abs(obj)[m], np.abs(truth)
    r = np.corrcoef(ra, ta[m])[0, 1]
    assert r > 0.4
    for wrong in (ta[::-1, :], ta[:, ::-1], ta.T, ta[::-1, ::-1]):
        assert np.corrcoef(ra, wrong[m])[0, 1] < r - 0.3


def test_quality_floor_on_unseen_object(pipeline: dict[str, Path]) -> None:
    metrics = json.loads((pipeline["eval"] / "metrics.json").read_text())
    # measured on this 2-core CPU (N=32 lines object, 12 epochs, width 1): amplitude Pearson 0.59; an
    # untrained model gives ~0. The network's own phase at gridsize 1 is not reliably correlated with the
    # truth (measured between -0.003 and 0.31 on the same settings): a single pattern does not fix each
    # patch's phase offset. The phase is checked after refinement, in the next-but-one test.
    assert metrics["amplitude"]["pearson"] > 0.4
    assert abs(metrics["shift_px"][0]) < 1.5 and abs(metrics["shift_px"][1]) < 1.5
    for name in ("comparison.png", "frc.png"):
        assert (pipeline["eval"] / name).stat().st_size > 10_000


def test_product_file_written(pipeline: dict[str, Path]) -> None:
    from ptychopinn.io.product_h5 import load_product_h5

    prod = load_product_h5(pipeline["rec"] / "reconstruction.h5")
    with np.load(pipeline["rec"] / "reconstruction.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(prod.positions, z["positions"], atol=1e-6)
        np.testing.assert_array_equal(prod.obj, z["obj"])


def test_info_on_archive_and_scan(pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(pipeline["run"] / "wts.h5.zip"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "pytorch" and info["config"]["model"]["N"] == 32
    assert main(["info", str(pipeline["sim"] / "train.npz")]) == 0
    assert "scan" in capsys.readouterr().out


def test_infer_then_refine_in_one_command_beats_the_network_alone(pipeline: dict[str, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sim, out = pipeline["sim"], tmp_path / "refined"
    assert main(["infer", str(pipeline["run"]), str(sim / "test.npz"), "--output-dir", str(out), "--refine", "20",
                 "--quiet"]) == 0
    assert "refined 20 iterations" in capsys.readouterr().out
    assert (out / "network_reconstruction.npz").is_file() and (out / "misfit.png").is_file()
    from ptychopinn.workflows import evaluate_reconstruction

    net = json.loads((pipeline["eval"] / "metrics.json").read_text())
    ref = evaluate_reconstruction(out / "reconstruction.npz", sim / "test.npz", output_dir=tmp_path / "ev")
    assert ref["amplitude"]["ssim"] > net["amplitude"]["ssim"] + 0.1
    assert ref["phase"]["ssim"] > net["phase"]["ssim"] + 0.1
    assert abs(ref["shift_px"][0]) < 0.5 and abs(ref["shift_px"][1]) < 0.5
