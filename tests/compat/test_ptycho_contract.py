"""Replays, call by call, what the ptychodus 1.7.0 PtychoPINN plugin does in its child processes
(``ptychodus/model/ptychopinn/_subprocess.py``: ``run_train`` and ``run_reconstruct``; contract §3, §4),
plus the older in-process plugin's calls (§9), against a small simulated scan with known truth.

Training is tiny (N=32, 121 scan points, n_filters_scale=1, 10 epochs; about 20-60 s on 2 CPU cores
depending on load) and shared by the module. Measured with this setup (seeded): reconstruction of a
*different* scan has a phase correlation with the truth of 0.70 (amplitude 0.14: amplitude is learned
more slowly than phase at this budget), sub-pixel registration shift <= 0.2 px, and a flipped or
transposed truth correlates at most 0.18. The floors below (phase correlation >= 0.45, shift <= 1 px,
flips at least 0.25 worse) leave room for run-to-run variation while still failing for an untrained
model (phase correlation ~0), a flipped/transposed canvas or a misplaced one.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import N, compare_with_truth, counts_of, sim_scan, write_ptychodus_npz

pytestmark = pytest.mark.slow

NEPOCHS = 10
PHASE_CORR_FLOOR = 0.45
MAX_SHIFT_PX = 1.0
FLIP_MARGIN = 0.25


def _model_config(n: int, gridsize: int = 1) -> Any:
    from ptycho.config.config import ModelConfig

    # exactly the keywords ptychodus passes (§2.1); n_filters_scale=1 keeps the test fast
    return ModelConfig(N=n, gridsize=gridsize, n_filters_scale=1, model_type="pinn", amp_activation="sigmoid",
                       object_big=True, probe_big=True, probe_mask=False, pad_object=True, probe_scale=4.0,
                       gaussian_smoothing_sigma=0.0)


def _training_config(gridsize: int = 1) -> Any:
    from ptycho.config.config import TrainingConfig

    # §2.2: built in the parent with N=0 and Path() placeholders, then pickled to the child
    cfg = TrainingConfig(model=_model_config(0, gridsize), train_data_file=Path(), test_data_file=None,
                         batch_size=16, nepochs=NEPOCHS, mae_weight=0.0, nll_weight=1.0, realspace_mae_weight=0.0,
                         realspace_weight=0.0, nphotons=1e6, positions_provided=True, probe_trainable=False,
                         intensity_scale_trainable=True, output_dir=Path())
    return pickle.loads(pickle.dumps(cfg))


def _run_train(input_dir: Path, output_dir: Path, gridsize: int = 1) -> tuple[Any, Any, dict[str, Any]]:
    """§4 steps 1-7, in the plugin's order."""
    import ptycho.model_manager
    import ptycho.params
    from ptycho.config.config import update_legacy_dict
    from ptycho.raw_data import RawData
    from ptycho.workflows.components import run_cdi_example, save_outputs

    test_raw = RawData.from_file(input_dir / "test_data.npz")
    train_raw = RawData.from_file(input_dir / "train_data.npz")
    n = train_raw.diff3d.shape[-1]
    assert train_raw.diff3d.shape[-2] == n
    training_config = _training_config(gridsize)
    training_config.model.N = n
    update_legacy_dict(ptycho.params.cfg, training_config)
    amp, phase, results = run_cdi_example(train_raw, test_raw, training_config)
    ptycho.model_manager.save(output_dir)
    save_outputs(amp, phase, results, str(output_dir))
    return amp, phase, results


def _run_reconstruct(bundle_dir: Path, scan: Any, patterns: np.ndarray, *, gridsize: int = 1,
                     probe: np.ndarray | None = None, n_samples: int = 1) -> np.ndarray:
    """§3 steps 1-10, in the plugin's order; returns ``numpy.squeeze(canvas)``."""
    import ptycho.loader
    import ptycho.params
    import ptycho.probe
    import ptycho.tf_helper
    from ptycho.config.config import InferenceConfig, update_legacy_dict
    from ptycho.raw_data import RawData
    from ptycho.workflows.components import load_inference_bundle

    inference_config = pickle.loads(pickle.dumps(InferenceConfig(
        model=_model_config(patterns.shape[-1], gridsize), model_path=Path(), test_data_file=Path(), debug=False,
        output_dir=Path())))
    update_legacy_dict(ptycho.params.cfg, inference_config)
    model_obj, _config = load_inference_bundle(bundle_dir)
    raw = RawData.from_coords_without_pc(
        xcoords=scan.positions[:, 0].astype(np.float64), ycoords=scan.positions[:, 1].astype(np.float64),
        diff3d=patterns, probeGuess=scan.probe[None] if probe is None else probe,
        scan_index=np.zeros(scan.n_points, dtype=int), objectGuess=scan.obj)
    ptycho.probe.set_probe_guess(None, raw.probeGuess)
    grouped = raw.generate_grouped_data(inference_config.model.N, K=7, nsamples=n_samples,
                                        gridsize=inference_config.model.gridsize)
    container = ptycho.loader.load(lambda: grouped, raw.probeGuess, which=None, create_split=False)
    intensity_scale = ptycho.params.get("intensity_scale")
    patches = model_obj.predict([container.X * intensity_scale, container.local_offsets])
    canvas = ptycho.tf_helper.reassemble_position(patches, container.global_offsets, M=20)
    return np.squeeze(canvas)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One training run through the §4 sequence; the CWD is an empty directory that must stay empty."""
    root = tmp_path_factory.mktemp("contract")
    input_dir, output_dir, cwd = root / "in", root / "out", root / "cwd"
    for d in (input_dir, output_dir, cwd):
        d.mkdir()
    train_scan, test_scan = sim_scan(1), sim_scan(2)
    write_ptychodus_npz(input_dir / "train_data.npz", train_scan, counts_of(train_scan, np.uint16))
    write_ptychodus_npz(input_dir / "test_data.npz", test_scan, counts_of(test_scan, np.float32))
    old = os.getcwd()
    os.chdir(cwd)
    try:
        amp, phase, results = _run_train(input_dir, output_dir)
    finally:
        os.chdir(old)
    return {"amp": amp, "phase": phase, "results": results, "output_dir": output_dir, "cwd": cwd,
            "test_scan": test_scan}


def test_train_sequence_writes_the_model_and_nothing_into_the_cwd(trained: dict[str, Any]) -> None:
    import ptycho.params
    from ptychopinn.models.persist import load_model

    out = trained["output_dir"]
    assert trained["amp"] is None and trained["phase"] is None
    assert (out / "wts.h5.zip").is_file()
    loaded = load_model(out / "wts.h5.zip")
    assert loaded.model_config.N == N and loaded.model_config.gridsize == 1
    assert (out / "history.json").is_file()
    results = trained["results"]
    assert results["backend"] == "pytorch" and len(results["history"]["train_loss"]) == NEPOCHS
    assert results["history"]["train_loss"][-1] < results["history"]["train_loss"][0]
    assert ptycho.params.get("intensity_scale") == pytest.approx(results["intensity_scale"])
    assert list(trained["cwd"].iterdir()) == []


def test_reconstruct_sequence_case_a_orientation_and_quality(trained: dict[str, Any]) -> None:
    scan = trained["test_scan"]
    arr = _run_reconstruct(trained["output_dir"], scan, counts_of(scan, np.uint16))
    assert type(arr) is np.ndarray and arr.ndim == 2 and np.iscomplexobj(arr)
    assert arr.shape == scan.obj.shape  # the input object's pixel grid (what ptychodus labels it with)
    q = compare_with_truth(arr, scan.obj)
    assert q["phase_corr"] >= PHASE_CORR_FLOOR, q
    assert max(abs(s) for s in q["shift"]) <= MAX_SHIFT_PX, q
    assert max(q["flipped_phase_corr"].values()) <= q["phase_corr"] - FLIP_MARGIN, q
    ptychodus_object = pytest.importorskip("ptychodus.api.object")
    geometry = ptychodus_object.ObjectCenter(0.0, 0.0)
    pixel = pytest.importorskip("ptychodus.api.geometry").PixelGeometry(1e-8, 1e-8)
    obj = ptychodus_object.Object(array=arr, layer_spacing_m=[], pixel_geometry=pixel, center=geometry)
    assert obj.get_array().shape == (1, *scan.obj.shape)


def test_opt_in_refinement_through_the_environment(trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """ptychodus calls reassemble_position as is; PTYCHOPINN_REFINE_ITERATIONS opts in to refinement."""
    from ptycho.tf_helper import REFINE_ENV
    from ptychopinn.errors import ConfigError

    scan = trained["test_scan"]
    plain = compare_with_truth(_run_reconstruct(trained["output_dir"], scan, counts_of(scan, np.uint16)), scan.obj)
    monkeypatch.setenv(REFINE_ENV, "20")
    arr = _run_reconstruct(trained["output_dir"], scan, counts_of(scan, np.uint16))
    assert arr.shape == scan.obj.shape  # still the input object's grid
    q = compare_with_truth(arr, scan.obj)
    # measured: phase correlation 0.67 stitched -> 0.89 after 20 iterations
    assert q["phase_corr"] >= max(0.85, plain["phase_corr"] + 0.1), (plain, q)
    assert max(abs(s) for s in q["shift"]) <= MAX_SHIFT_PX, q
    monkeypatch.setenv(REFINE_ENV, "many")
    with pytest.raises(ConfigError, match=REFINE_ENV):
        _run_reconstruct(trained["output_dir"], scan, counts_of(scan, np.uint16))


def test_reconstruct_case_b_extracted_members_and_amplitude_input(trained: dict[str, Any], tmp_path: Path) -> None:
    scan = trained["test_scan"]
    case_a = _run_reconstruct(trained["output_dir"], scan, counts_of(scan, np.uint16))
    copy = tmp_path / "model.zip"  # ptychodus's save_model copies wts.h5.zip byte for byte
    copy.write_bytes((trained["output_dir"] / "wts.h5.zip").read_bytes())
    extracted = tmp_path / "bundle"
    with zipfile.ZipFile(copy) as z:  # ptychodus's load_model_from_file + _extract_bundle_dir
        z.extractall(extracted)
    case_b = _run_reconstruct(extracted, scan, counts_of(scan, np.uint16))
    np.testing.assert_array_equal(case_a, case_b)
    # amplitudes instead of counts give the same reconstruction up to count rounding
    from_amplitude = _run_reconstruct(extracted, scan, np.sqrt(counts_of(scan).astype(np.float32)))
    np.testing.assert_allclose(from_amplitude, case_a, rtol=1e-3, atol=1e-4)


def test_older_in_process_plugin_calls(trained: dict[str, Any], tmp_path: Path) -> None:
    """§9: 2-D probe, grouping without gridsize=, ptycho.model.params(), save(file_path)."""
    import ptycho
    import ptycho.loader
    import ptycho.model_manager
    from ptycho.raw_data import RawData
    from ptycho.workflows.components import load_inference_bundle

    scan = trained["test_scan"]
    model, _ = load_inference_bundle(trained["output_dir"])
    raw = RawData.from_coords_without_pc(xcoords=scan.positions[:, 0], ycoords=scan.positions[:, 1],
                                         diff3d=counts_of(scan), probeGuess=scan.probe,
                                         scan_index=np.zeros(scan.n_points, int), objectGuess=scan.obj)
    ptycho.probe.set_probe_guess(None, raw.probeGuess)  # reached as an attribute of the package
    grouped = raw.generate_grouped_data(N, K=7, nsamples=1)
    container = ptycho.loader.load(lambda: grouped, raw.probeGuess, which=None, create_split=False)
    scale = ptycho.model.params()["intensity_scale"]
    canvas = ptycho.tf_helper.reassemble_position(model.predict([container.X * scale, container.local_offsets]),
                                                  container.global_offsets, M=20)
    expected = _run_reconstruct(trained["output_dir"], scan, counts_of(scan))
    np.testing.assert_array_equal(np.squeeze(canvas), expected)
    saved = ptycho.model_manager.save(tmp_path / "exported.zip")
    assert saved == tmp_path / "exported.zip" and saved.is_file()
    again, _ = load_inference_bundle(saved)
    np.testing.assert_array_equal(again.predict([container.X, container.local_offsets]),
                                  model.predict([container.X, container.local_offsets]))


def test_gridsize2_train_stitch_and_plugin_path(tmp_path: Path) -> None:
    """gridsize 2 end to end: run_cdi_example(do_stitching=True) returns amplitude/phase images, and the
    plugin path (merged group-centred patches stitched at the group centres) agrees with them."""
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    input_dir.mkdir()
    output_dir.mkdir()
    train_scan, test_scan = sim_scan(1), sim_scan(2)
    write_ptychodus_npz(input_dir / "train_data.npz", train_scan, counts_of(train_scan))
    write_ptychodus_npz(input_dir / "test_data.npz", test_scan, counts_of(test_scan))
    from ptycho.raw_data import RawData
    from ptycho.workflows.components import run_cdi_example

    cfg = _training_config(gridsize=2)
    cfg.model.N = N
    amp, phase, results = run_cdi_example(RawData.from_file(input_dir / "train_data.npz"),
                                          RawData.from_file(input_dir / "test_data.npz"), cfg, do_stitching=True)
    assert amp.shape == phase.shape == test_scan.obj.shape and amp.dtype == np.float32
    stitched = results["reconstructed_obj"]
    import ptycho.model_manager

    ptycho.model_manager.save(output_dir)
    plugin = _run_reconstruct(output_dir, test_scan, counts_of(test_scan), gridsize=2)
    q_plugin = compare_with_truth(plugin, test_scan.obj)
    q_core = compare_with_truth(stitched, test_scan.obj)
    # both views of the same model: the plugin path must agree with per-member stitching
    box = q_plugin["box"]
    a = np.angle(plugin[box[0]:box[1], box[2]:box[3]])
    b = np.angle(stitched[box[0]:box[1], box[2]:box[3]])
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8
    for q in (q_plugin, q_core):
        assert max(abs(s) for s in q["shift"]) <= 1.5, q
        assert q["phase_corr"] > max(q["flipped_phase_corr"].values()), q
