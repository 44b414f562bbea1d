"""`ptychopinn refine` and `ptychopinn infer --refine`: outputs, quality against the truth, and bad input
(exit code 2, one line, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import astronaut_scan
from ptychopinn.cli import main
from ptychopinn.config import SimulationConfig
from ptychopinn.io.npz import save_npz
from ptychopinn.workflows import evaluate_reconstruction


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_npz(tmp_path_factory.mktemp("scan") / "scan.npz", astronaut_scan())


def test_refine_flat_writes_outputs_and_matches_the_truth(tmp_path, scan_path, capsys):
    out = tmp_path / "ref"
    assert main(["refine", str(scan_path), "--flat", "--output-dir", str(out), "--iterations", "25", "--quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and "refined 441 patterns for 25 iterations" in line[0]
    for name in ("reconstruction.npz", "amplitude.png", "phase.png", "misfit.png"):
        assert (out / name).is_file()
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["misfit"].shape == (25,) and z["probe"].shape == (32, 32) and z["positions"].shape == (441, 2)
        meta = json.loads(str(z["_metadata"]))
    settings = meta["refine_config"]  # the misfit history's meaning
    assert settings["noise"] == "auto" and settings["iterations"] == 25 and settings["alpha"] is None
    assert meta["refine_engine"] == "cg" and meta["refine_noise"] == "gaussian"
    assert meta["refine_stop_reason"] == "iteration cap" and "stopped: iteration cap" in line[0]
    m = evaluate_reconstruction(out / "reconstruction.npz", scan_path, output_dir=tmp_path / "ev", remove_ramp=True)
    # measured 0.947 / 0.989 after 25 iterations (cg engine; rpie 0.937 / 0.992)
    assert m["amplitude"]["ssim"] > 0.90 and m["phase"]["ssim"] > 0.95


@pytest.mark.parametrize(("alpha", "fragment"), [("0", "config field 'alpha'"), ("1.5", "a number in (0, 1]")])
def test_refine_alpha_out_of_range_exits_2_with_one_line(tmp_path, scan_path, capsys, alpha, fragment):
    out = tmp_path / "o"
    code = main(["refine", str(scan_path), "--flat", "--alpha", alpha, "--output-dir", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert not out.exists()


def test_refine_alpha_flag_reaches_the_refinement():
    import argparse

    from ptychopinn.cli.refine import add_refine_options, refine_config

    p = argparse.ArgumentParser()
    add_refine_options(p)
    assert refine_config(p.parse_args(["--alpha", "0.3"]), 5).alpha == 0.3
    cfg = refine_config(p.parse_args([]), 5)
    assert cfg.alpha is None  # the RefineConfig default: each engine's own
    assert cfg.resolved_alpha("cg") == 0.01 and cfg.resolved_alpha("rpie") == 0.1


def test_refine_from_a_reconstruction_and_with_probe_and_positions(tmp_path, scan_path):
    first = tmp_path / "a"
    assert main(["refine", str(scan_path), "--flat", "--output-dir", str(first), "--iterations", "2", "--quiet"]) == 0
    second = tmp_path / "b"
    assert main(["refine", str(scan_path), "--init", str(first / "reconstruction.npz"), "--output-dir", str(second),
                 "--iterations", "3", "--refine-probe", "--refine-positions", "--noise", "poisson", "--quiet",
                 "--product"]) == 0
    with np.load(second / "reconstruction.npz", allow_pickle=False) as z:
        assert z["misfit"].shape == (3,)
    assert (second / "reconstruction.h5").is_file()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--iterations", "0"], "expected a positive integer"),
    (["--noise", "laplace"], "invalid choice"),
])
def test_refine_bad_flags_exit_2(tmp_path, scan_path, capsys, args, fragment):
    with pytest.raises(SystemExit) as exc:
        main(["refine", str(scan_path), "--flat", "--output-dir", str(tmp_path / "o"), *args])
    assert exc.value.code == 2 and fragment in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_refine_bad_start_exits_2_with_one_line_and_writes_nothing(tmp_path, scan_path, capsys):
    bad = tmp_path / "nan.npz"
    obj = np.ones((50, 50), np.complex64)
    obj[5, 5] = np.nan
    np.savez(bad, obj=obj)
    far = tmp_path / "far.npz"
    np.savez(far, obj=np.ones((10, 10), np.complex64), origin_xy=np.array([5000.0, 5000.0]))
    for start, fragment in ((bad, "NaN"), (far, "does not overlap"), (tmp_path / "missing.npz", "not found")):
        out = tmp_path / "o"
        code = main(["refine", str(scan_path), "--init", str(start), "--output-dir", str(out), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and fragment in err[0], err
        assert not out.exists()


def test_refine_probe_of_the_wrong_size_exits_2(tmp_path, capsys):
    from ptychopinn.simulate import simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, object_size=80, object_kind="grf", n_points=20, seed=3))
    path = tmp_path / "scan.npz"
    save_npz(path, scan)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["probeGuess"] = np.ones((16, 16), np.complex64)
    np.savez(path, **arrays)
    code = main(["refine", str(path), "--flat", "--output-dir", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "probe" in err[0]
    assert not (tmp_path / "o").exists()


def test_prior_weight_flag_reaches_the_refinement_and_a_negative_one_is_refused(tmp_path, scan_path, capsys):
    import argparse

    from ptychopinn.cli.refine import add_refine_options, refine_config

    p = argparse.ArgumentParser()
    add_refine_options(p)
    assert refine_config(p.parse_args(["--prior-weight", "0.3"]), 5).prior_weight == 0.3
    assert refine_config(p.parse_args([]), 5).prior_weight == 0.0
    out = tmp_path / "o"
    code = main(["refine", str(scan_path), "--flat", "--prior-weight", "-1", "--output-dir", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "prior_weight" in err[0], err
