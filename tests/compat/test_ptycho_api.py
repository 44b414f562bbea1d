"""Fast tests of the ``ptycho`` compatibility surface (no training): configs, the legacy dict, RawData,
grouping, the loader container, stitching frames, the predict wrapper and model bundles."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import (
    N,
    compare_with_truth,
    counts_of,
    sim_scan,
    untrained_model,
    write_ptychodus_npz,
    write_reference_tf_bundle,
)

PTYCHODUS_MODEL_KWARGS = dict(N=0, gridsize=1, n_filters_scale=2, model_type="pinn", amp_activation="sigmoid",
                              object_big=True, probe_big=True, probe_mask=False, pad_object=True, probe_scale=4.0,
                              gaussian_smoothing_sigma=0.0)


def _training_config(**model_changes: object):
    from ptycho.config.config import ModelConfig, TrainingConfig

    model = ModelConfig(**{**PTYCHODUS_MODEL_KWARGS, **model_changes})
    return TrainingConfig(model=model, train_data_file=Path(), test_data_file=None, batch_size=16, nepochs=50,
                          mae_weight=0.0, nll_weight=1.0, realspace_mae_weight=0.0, realspace_weight=0.0,
                          nphotons=1e6, positions_provided=True, probe_trainable=False,
                          intensity_scale_trainable=True, output_dir=Path())


def _oracle_patches(obj: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Object patches [P, N, N] with pixel N//2 on ``positions`` (x, y) (bilinear: exact at whole pixels)."""
    from ptychopinn.physics.patches import extract_patches

    return extract_patches(torch.from_numpy(obj), torch.from_numpy(positions), N).numpy()


def _ptychodus_patches(obj: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Object patches in ptychodus's convention: the patch centre (N-1)/2 on ``positions`` (x, y), i.e. pixel
    N//2 half a pixel further (exact where ``positions`` are half-integers)."""
    return _oracle_patches(obj, positions + 0.5)


def _smooth(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A smooth complex object defined at every real point (row y, column x)."""
    return ((0.75 + 0.2 * np.sin(2 * np.pi * x / 24) * np.cos(2 * np.pi * y / 20))
            * np.exp(1j * 0.8 * np.sin(2 * np.pi * (x + y) / 32)))


def _smooth_patches(positions: np.ndarray, centre: float) -> np.ndarray:
    """Patches [P, N, N] of :func:`_smooth`, pixel ``(r, c)`` = point ``(y - centre + r, x - centre + c)``."""
    g = np.arange(N, dtype=np.float64) - centre
    return np.stack([_smooth(y + g[:, None], x + g[None, :]) for x, y in positions]).astype(np.complex64)


# ----------------------------------------------------------------------------------------- imports
def test_import_ptycho_and_config_is_light_and_submodules_are_lazy_attributes() -> None:
    code = (
        "import sys, ptycho, ptycho.config.config, ptycho.params\n"
        "heavy = [m for m in ('torch', 'lightning', 'matplotlib', 'h5py') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "import ptycho.loader\n"
        "print('ATTRS', callable(ptycho.probe.set_probe_guess), callable(ptycho.tf_helper.reassemble_position))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "HEAVY []" in out
    assert "ATTRS True True" in out


# ----------------------------------------------------------------------------------------- configs
def test_model_config_accepts_n_zero_and_is_mutable_like_ptychodus_needs() -> None:
    cfg = _training_config()
    assert cfg.model.N == 0
    cfg.model.N = 64  # what the ptychodus child does before training
    assert cfg.model.N == 64


def test_configs_pickle_round_trip() -> None:
    from ptycho.config.config import InferenceConfig, ModelConfig

    train = _training_config()
    infer = InferenceConfig(model=ModelConfig(**{**PTYCHODUS_MODEL_KWARGS, "N": 64}), model_path=Path(),
                            test_data_file=Path(), debug=False, output_dir=Path())
    for obj in (train, train.model, infer):
        back = pickle.loads(pickle.dumps(obj))
        assert back == obj and back is not obj


def test_training_config_defaults_are_documented_choices() -> None:
    from ptycho.config.config import TrainingConfig

    cfg = TrainingConfig()
    assert cfg.n_groups is None  # one group per scan point, not 512
    assert cfg.nphotons == 1e9 and cfg.backend == "pytorch" and cfg.output_dir is None
    assert cfg.intensity_scale_trainable is True and cfg.neighbor_count == 4


def test_tensorflow_backend_is_refused_with_a_clear_error() -> None:
    from ptycho.config.config import InferenceConfig, TrainingConfig, to_core_training
    from ptychopinn.errors import ConfigError

    with pytest.raises(ConfigError, match=r'PyTorch backend only; use backend="pytorch"'):
        TrainingConfig(backend="tensorflow")
    with pytest.raises(ValueError, match="pytorch"):
        InferenceConfig(backend="tensorflow")
    cfg = TrainingConfig()
    cfg.backend = "tensorflow"  # set after construction: refused at use
    with pytest.raises(ConfigError, match="PyTorch backend only"):
        to_core_training(cfg)


def test_update_legacy_dict_maps_keys_stringifies_paths_and_skips_none() -> None:
    from ptycho.config.config import update_legacy_dict

    cfg = _training_config(N=64, gridsize=2)
    cfg.output_dir = Path("/tmp/run")
    legacy: dict[str, object] = {"test_data_file_path": "keep-me"}
    update_legacy_dict(legacy, cfg)
    assert legacy["N"] == 64 and legacy["gridsize"] == 2
    assert legacy["object.big"] is True and legacy["probe.big"] is True and legacy["probe.mask"] is False
    assert legacy["probe.trainable"] is False and legacy["intensity_scale.trainable"] is True
    assert legacy["positions.provided"] is True
    assert legacy["output_prefix"] == "/tmp/run" and legacy["train_data_file_path"] == "."
    assert legacy["test_data_file_path"] == "keep-me"  # test_data_file=None did not overwrite it
    assert "model" not in legacy and "object_big" not in legacy


def test_core_conversion_validates_at_the_boundary() -> None:
    from ptycho.config.config import to_core_model, to_core_training
    from ptychopinn.errors import ConfigError

    cfg = _training_config(amp_activation="silu")
    with pytest.raises(ConfigError, match=r"set config.model.N"):
        to_core_training(cfg)
    cfg.model.N = 64
    model, training = to_core_training(cfg)
    assert model.N == 64 and model.amp_activation == "swish" and model.intensity_scale_trainable is True
    assert training.nphotons == 1e6 and training.n_groups is None and training.subsample_seed == 42
    cfg.model.N = 60  # not a multiple of 8
    with pytest.raises(ConfigError, match="'N'"):
        to_core_model(cfg.model)


# ----------------------------------------------------------------------------------------- params
def test_params_get_set_and_missing_key() -> None:
    import ptycho.model
    import ptycho.params as params

    with pytest.raises(KeyError, match="no_such_key"):
        params.get("no_such_key")
    params.set("compat_test_key", 3.5)
    assert params.get("compat_test_key") == 3.5
    assert params.params() is params.cfg and ptycho.model.params() is params.cfg
    del params.cfg["compat_test_key"]


def test_intensity_scale_is_absent_until_a_model_is_loaded() -> None:
    code = "import ptycho.params as p\ntry:\n    p.get('intensity_scale')\nexcept KeyError:\n    print('MISSING')\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "MISSING" in out


# ----------------------------------------------------------------------------------------- RawData
@pytest.mark.parametrize("layout", ["2d", "modes_first", "channels_last", "two_modes"])
def test_raw_data_accepts_probe_layouts(layout: str) -> None:
    from ptycho.raw_data import RawData

    scan = sim_scan(1)
    p = scan.probe
    probe = {"2d": p, "modes_first": p[None], "channels_last": p[..., None],
             "two_modes": np.stack([p, 0.1 * p])}[layout]
    raw = RawData.from_coords_without_pc(xcoords=scan.positions[:, 0], ycoords=scan.positions[:, 1],
                                         diff3d=scan.diffraction, probeGuess=probe,
                                         scan_index=np.zeros(scan.n_points, int), objectGuess=scan.obj)
    assert raw.probeGuess.shape == (N, N) and raw.probeGuess.dtype == np.complex64
    np.testing.assert_allclose(raw.probeGuess, p, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
def test_raw_data_takes_sqrt_of_counts_and_keeps_amplitudes(dtype: type) -> None:
    from ptycho.raw_data import RawData

    scan = sim_scan(1)
    counts = counts_of(scan, dtype)
    kw = dict(xcoords=scan.positions[:, 0], ycoords=scan.positions[:, 1], probeGuess=scan.probe[None],
              scan_index=np.zeros(scan.n_points, int), objectGuess=scan.obj)
    raw = RawData.from_coords_without_pc(diff3d=counts, **kw)
    assert raw.metadata["input_units"] == "intensity"
    np.testing.assert_allclose(raw.diff3d, np.sqrt(counts.astype(np.float64)), rtol=1e-6)
    amp = RawData.from_coords_without_pc(diff3d=scan.diffraction, **kw)
    assert amp.metadata["input_units"] == "amplitude"
    np.testing.assert_array_equal(amp.diff3d, scan.diffraction)


def test_raw_data_from_ptychodus_npz_file(tmp_path: Path) -> None:
    from ptycho.raw_data import RawData

    scan = sim_scan(1)
    path = write_ptychodus_npz(tmp_path / "train_data.npz", scan, counts_of(scan))
    raw = RawData.from_file(path)
    assert raw.diff3d.shape == (scan.n_points, N, N) and raw.diff3d.dtype == np.float32
    assert raw.diff3d.shape[-1] == raw.diff3d.shape[-2] == N
    np.testing.assert_allclose(raw.diff3d, np.sqrt(counts_of(scan).astype(np.float64)), rtol=1e-6)
    np.testing.assert_array_equal(raw.xcoords, scan.positions[:, 0])
    np.testing.assert_array_equal(raw.ycoords_start, scan.positions[:, 1])
    assert raw.probeGuess.shape == (N, N) and raw.objectGuess.shape == scan.obj.shape


def test_raw_data_rejects_bad_input_with_one_line_errors() -> None:
    from ptycho.raw_data import RawData
    from ptychopinn.errors import DataFormatError

    scan = sim_scan(1)
    kw = dict(ycoords=scan.positions[:, 1], diff3d=scan.diffraction, probeGuess=scan.probe,
              scan_index=np.zeros(scan.n_points, int))
    with pytest.raises(DataFormatError, match="one coordinate per pattern") as info:
        RawData.from_coords_without_pc(xcoords=scan.positions[:-1, 0], **kw)
    assert "\n" not in str(info.value)
    with pytest.raises(DataFormatError, match="probe"):
        RawData.from_coords_without_pc(xcoords=scan.positions[:, 0], **{**kw, "probeGuess": scan.probe[:, :-2]})


# ----------------------------------------------------------------------------------------- grouping
def _raw(seed: int = 1):
    from ptycho.raw_data import RawData

    return RawData.from_scan(sim_scan(seed))


def test_generate_grouped_data_default_nsamples_covers_every_point() -> None:
    raw = _raw()
    m = len(raw)
    g = raw.generate_grouped_data(N, K=7, nsamples=1, gridsize=1)
    assert g["X_full"].shape == (m, N, N, 1) and g["X_full"].dtype == np.float32
    np.testing.assert_array_equal(g["nn_indices"][:, 0], np.arange(m))
    assert g["coords_offsets"].shape == (m, 1, 2, 1) and g["coords_relative"].shape == (m, 1, 2, 1)
    np.testing.assert_array_equal(g["coords_offsets"][:, 0, :, 0], raw.positions)
    assert np.all(g["coords_relative"] == 0)
    # Input normalisation: mean per-pattern energy (N/2)**2.
    energy = (g["X_full"].astype(np.float64) ** 2).sum(axis=(1, 2)).mean()
    assert energy == pytest.approx((N / 2) ** 2, rel=1e-4)


def test_generate_grouped_data_gridsize2_reference_sign_and_coverage() -> None:
    raw = _raw()
    m = len(raw)
    g = raw.generate_grouped_data(N, K=7, nsamples=1, gridsize=2)
    assert g["X_full"].shape == (m, N, N, 4) and g["coords_relative"].shape == (m, 1, 2, 4)
    assert set(g["nn_indices"][:, 0]) == set(range(m))  # each point seeds a group
    members = raw.positions[g["nn_indices"]]  # [B, 4, 2]
    centre = members.mean(axis=1)
    np.testing.assert_allclose(g["coords_offsets"][:, 0, :, 0], centre)
    np.testing.assert_allclose(g["coords_nn"][:, 0], np.swapaxes(members, 1, 2))
    # the reference sign: coords_relative = -(member - centre)
    np.testing.assert_allclose(g["coords_relative"][:, 0], -np.swapaxes(members - centre[:, None], 1, 2))
    np.testing.assert_array_equal(g["diffraction"][..., 2], raw.diff3d[g["nn_indices"][:, 2]])
    more = raw.generate_grouped_data(N, K=7, nsamples=2 * m, gridsize=2)
    assert more["X_full"].shape[0] == 2 * m and set(more["nn_indices"][:, 0]) == set(range(m))


def test_generate_grouped_data_gridsize_from_params_and_n_check() -> None:
    import ptycho.params as params
    from ptychopinn.errors import ConfigError

    raw = _raw()
    old = params.cfg.get("gridsize")
    try:
        params.cfg["gridsize"] = 2
        assert raw.generate_grouped_data(N, K=7, nsamples=1)["X_full"].shape[-1] == 4
    finally:
        params.cfg["gridsize"] = old
    with pytest.raises(ConfigError, match=f"pass N={N}"):
        raw.generate_grouped_data(64, K=7, nsamples=1, gridsize=1)


# ----------------------------------------------------------------------------------------- loader
def test_loader_container_layouts_and_split() -> None:
    import ptycho.loader as loader

    raw = _raw()
    g = raw.generate_grouped_data(N, K=7, nsamples=1, gridsize=2)
    c = loader.load(lambda: g, raw.probeGuess[None], which=None, create_split=False)
    b = len(raw)
    assert isinstance(c.X, np.ndarray) and c.X.shape == (b, N, N, 4) and c.X.dtype == np.float32
    assert isinstance(c.X * 12.5, np.ndarray)
    assert c.local_offsets.shape == (b, 1, 2, 4) and c.global_offsets.shape == (b, 1, 2, 1)
    assert c.object_shape == raw.objectGuess.shape and c.probe.shape == (N, N)
    train = loader.load(lambda: (g, 0.75), raw.probeGuess, which="train", create_split=True)
    test = loader.load(lambda: (g, 0.75), raw.probeGuess, which="test", create_split=True)
    assert len(train) == int(0.75 * b) and len(train) + len(test) == b


# ----------------------------------------------------------------------------------------- stitching
def test_reassemble_position_object_frame_places_patches_exactly() -> None:
    import ptycho.loader as loader
    import ptycho.tf_helper as tf_helper

    scan = sim_scan(1)
    raw = _raw()
    g = raw.generate_grouped_data(N, K=7, nsamples=1, gridsize=1)
    c = loader.load(lambda: g, raw.probeGuess)
    # ptychodus's convention: the patch centre (N-1)/2 is on the offset, so at half-integer offsets (pixel N//2
    # on a whole pixel) patches cut from the truth must come back pixel for pixel
    pos = np.round(c.global_offsets[:, 0, :, 0]) - 0.5
    c.global_offsets[:, 0, :, 0] = pos
    patches = _ptychodus_patches(scan.obj, pos)[..., None]
    canvas = tf_helper.reassemble_position(patches, c.global_offsets, M=20)
    assert isinstance(canvas, np.ndarray) and canvas.shape == scan.obj.shape and canvas.dtype == np.complex64
    arr = np.squeeze(canvas)
    assert arr.ndim == 2 and np.iscomplexobj(arr)
    covered = np.abs(arr) > 0
    assert covered.mean() > 0.4
    np.testing.assert_allclose(arr[covered], scan.obj[covered], atol=1e-5)


def test_reassemble_position_orientation_with_subpixel_positions() -> None:
    import ptycho.loader as loader
    import ptycho.tf_helper as tf_helper

    scan = sim_scan(1)
    raw = _raw()
    g = raw.generate_grouped_data(N, K=7, nsamples=1, gridsize=1)
    c = loader.load(lambda: g, raw.probeGuess)
    patches = _ptychodus_patches(scan.obj, c.global_offsets[:, 0, :, 0])[..., None]
    canvas = tf_helper.reassemble_position(torch.from_numpy(patches), c.global_offsets, M=20)
    q = compare_with_truth(canvas, scan.obj)
    assert q["phase_corr"] > 0.97 and q["amp_corr"] > 0.97
    assert max(abs(s) for s in q["shift"]) < 0.3
    assert max(q["flipped_phase_corr"].values()) < q["phase_corr"] - 0.3


def test_reassemble_position_scan_frame_for_unknown_offsets() -> None:
    import ptycho.tf_helper as tf_helper

    # a 3 x 3 grid, 4 px apart, jittered, not registered by any loader call: the canvas centre pixel is
    # exactly the midpoint of the offsets' bounding box, where ptychodus puts its object centre
    xs, ys = np.meshgrid([26.0, 30.0, 34.0], [30.0, 34.0, 38.0])
    pos = np.stack([xs.ravel(), ys.ravel()], axis=1) + np.random.default_rng(0).uniform(-0.4, 0.4, (9, 2))
    mid = 0.5 * (pos.min(axis=0) + pos.max(axis=0))
    offsets = pos[:, None, :, None].copy()
    canvas = tf_helper.reassemble_position(_smooth_patches(pos, (N - 1) / 2)[..., None], offsets, M=20)
    h, w = canvas.shape
    assert h % 2 == 1 and w % 2 == 1 and min(h, w) >= tf_helper.window_for(20, N) + 8
    # canvas (row, col) is object point (mid_y - (h-1)/2 + row, mid_x - (w-1)/2 + col)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    expected = _smooth(mid[1] - (h - 1) / 2 + yy, mid[0] - (w - 1) / 2 + xx)
    covered = np.abs(canvas) > 0
    assert covered[h // 2 - 5:h // 2 + 5, w // 2 - 5:w // 2 + 5].all()
    np.testing.assert_allclose(canvas[covered], expected[covered], atol=2e-3)


# ----------------------------------------------------------------------------------------- predict wrapper
def _container(gridsize: int):
    import ptycho.loader as loader

    raw = _raw()
    g = raw.generate_grouped_data(N, K=7, nsamples=1, gridsize=gridsize)
    return raw, loader.load(lambda: g, raw.probeGuess)


def test_predict_equals_core_reconstruction_and_ignores_input_scale() -> None:
    import ptycho.tf_helper as tf_helper
    from ptycho.workflows.inference_model import InferenceModel
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.predict import reconstruct

    model = untrained_model()
    raw, c = _container(1)
    wrapper = InferenceModel(model)
    out = wrapper.predict([c.X * 61.25, c.local_offsets])
    assert isinstance(out, np.ndarray) and out.shape == (len(raw), N, N, 1) and out.dtype == np.complex64
    np.testing.assert_allclose(wrapper.predict([c.X, c.local_offsets], batch_size=7), out, rtol=1e-4, atol=1e-5)
    canvas = tf_helper.reassemble_position(out, c.global_offsets, M=20)
    # the core reconstruction of the same scan with the positions moved to where ptychodus's convention puts
    # patch pixel N//2 (half a pixel further)
    from ptychopinn.data.scan import ScanData

    moved = ScanData(diffraction=raw.diff3d, positions=raw.positions + 0.5, probe=raw.probeGuess)
    # the reference surface stitches by a plain average, without phase synchronisation
    plain = InferenceConfig(stitch_window=tf_helper.window_for(20, N), stitch_taper=0.0, stitch_sync="off")
    core = reconstruct(model, moved, plain, object_shape=raw.objectGuess.shape, device="cpu")
    np.testing.assert_allclose(canvas, core.obj, rtol=1e-4, atol=1e-5)


def test_predict_gridsize2_returns_group_centred_merged_patches() -> None:
    from ptycho.workflows.inference_model import InferenceModel
    from ptychopinn.errors import ConfigError

    raw, c = _container(2)
    out = InferenceModel(untrained_model(gridsize=2)).predict([c.X * 3.0, c.local_offsets])
    assert out.shape == (len(raw), N, N, 1) and np.all(np.isfinite(out))
    _, c1 = _container(1)
    with pytest.raises(ConfigError, match="gridsize 2"):
        InferenceModel(untrained_model(gridsize=2)).predict([c1.X, c1.local_offsets])


def test_merge_members_of_consistent_patches_is_the_patch_at_the_group_centre() -> None:
    from ptycho.workflows.inference_model import merge_members

    scan = sim_scan(1)
    raw, c = _container(2)
    members = raw.positions[c.nn_indices]  # [B, 4, 2] absolute
    b = members.shape[0]
    truth_members = _oracle_patches(scan.obj, members.reshape(-1, 2)).reshape(b, 4, N, N)
    rel = members - members.mean(axis=1, keepdims=True)
    merged = merge_members(torch.from_numpy(truth_members), torch.from_numpy(rel)).numpy()
    at_centre = _oracle_patches(scan.obj, members.mean(axis=1))
    inner = slice(N // 4, N - N // 4)  # the central region every member covers
    err = np.abs(merged[:, inner, inner] - at_centre[:, inner, inner])
    # equal up to bilinear interpolation of sub-pixel offsets (the object varies by ~1 per 10 px)
    assert float(np.median(err)) < 0.02 and float(err.max()) < 0.3


# ----------------------------------------------------------------------------------------- bundles
def test_load_inference_bundle_cases_and_params_side_effect(untrained_archive_dir: Path, tmp_path: Path) -> None:
    import ptycho.params as params
    from ptycho.workflows.components import load_inference_bundle

    archive = untrained_archive_dir / "wts.h5.zip"
    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(archive) as z:
        z.extractall(extracted)  # what ptychodus does with a model saved as model.zip (case B)
    assert not (extracted / "wts.h5.zip").exists()
    outputs = []
    for where in (untrained_archive_dir, extracted, archive):
        params.cfg.pop("intensity_scale", None)
        params.cfg["gridsize"] = 3
        model, cfg = load_inference_bundle(where)
        assert params.get("intensity_scale") == pytest.approx(30.0, rel=1e-5)
        assert params.cfg["gridsize"] == 1 and params.cfg["N"] == N and params.cfg["nphotons"] == 1e6
        assert cfg["intensity_scale"] == params.cfg["intensity_scale"] and cfg is not params.cfg
        x = np.abs(np.random.default_rng(0).normal(size=(3, N, N, 1))).astype(np.float32)
        outputs.append(model.predict([x, np.zeros((3, 1, 2, 1), np.float32)]))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_load_inference_bundle_errors(tmp_path: Path) -> None:
    from ptycho.workflows.components import load_inference_bundle
    from ptychopinn.errors import ArchiveError

    with pytest.raises(FileNotFoundError):
        load_inference_bundle(tmp_path / "missing")
    with pytest.raises(ArchiveError):
        load_inference_bundle(write_reference_tf_bundle(tmp_path / "reference"))


def test_model_manager_save_dir_and_file_and_without_model(untrained_archive_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import ptycho.model_manager as model_manager
    from ptycho.workflows import components

    monkeypatch.setattr(components, "_state", {})
    with pytest.raises(RuntimeError, match="no model has been trained"):
        model_manager.save(tmp_path)
    model, _ = components.load_inference_bundle(untrained_archive_dir)
    out_dir = tmp_path / "new_dir"
    assert model_manager.save(out_dir) == out_dir / "wts.h5.zip"
    assert model_manager.save(tmp_path / "my_model.zip") == tmp_path / "my_model.zip"
    for saved in (out_dir, tmp_path / "my_model.zip"):
        again, _ = components.load_inference_bundle(saved)
        for k, v in model.model.state_dict().items():
            assert torch.equal(again.model.state_dict()[k], v)


def test_save_outputs_accepts_none_and_writes_history_and_images(tmp_path: Path) -> None:
    from ptycho.workflows.components import save_outputs

    hist = {"train_loss": [np.float32(0.5), 0.25], "val_loss": [0.4, 0.3]}
    written = save_outputs(None, None, {"history": hist}, str(tmp_path / "a"))
    assert set(written) == {"history"}
    assert json.loads((tmp_path / "a" / "history.json").read_text())["train_loss"] == [0.5, 0.25]
    amp = np.ones((16, 16), np.float32)
    written = save_outputs(amp, np.zeros((16, 16)), {}, tmp_path / "b")
    assert {p.name for p in written.values()} == {"reconstructed_amplitude.png", "reconstructed_phase.png"}
    assert all(p.stat().st_size > 0 for p in written.values())


def test_probe_state_and_data_derived_probe() -> None:
    import ptycho.probe as probe

    scan = sim_scan(1)
    got = probe.set_probe_guess(None, scan.probe[None])
    np.testing.assert_array_equal(probe.get_probe(), got)
    est = probe.set_probe_guess(np.moveaxis(scan.diffraction[:20, None], 1, -1))
    assert est.shape == (N, N) and np.abs(est).max() == pytest.approx(1.0)
    # the estimate is centred where the real probe is
    r, cc = np.unravel_index(np.argmax(np.abs(est)), est.shape)
    assert abs(r - N // 2) <= 2 and abs(cc - N // 2) <= 2


def test_core_ptychopinn_does_not_import_ptycho() -> None:
    code = "import sys, ptychopinn.workflows, ptychopinn.inference.predict\nprint('PTYCHO', 'ptycho' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "PTYCHO False" in out


def test_training_config_field_names_match_ptychodus_keywords() -> None:
    from ptycho.config.config import InferenceConfig, ModelConfig, TrainingConfig

    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    assert {"model", "train_data_file", "test_data_file", "batch_size", "nepochs", "mae_weight", "nll_weight",
            "realspace_mae_weight", "realspace_weight", "nphotons", "positions_provided", "probe_trainable",
            "intensity_scale_trainable", "output_dir", "n_groups", "neighbor_count", "n_subsample",
            "subsample_seed", "sequential_sampling", "backend"} <= names
    assert set(PTYCHODUS_MODEL_KWARGS) <= {f.name for f in dataclasses.fields(ModelConfig)}
    assert {"model", "model_path", "test_data_file", "debug", "output_dir"} <= {
        f.name for f in dataclasses.fields(InferenceConfig)}


# ----------------------------------------------------------------------------------------- tiny training
def test_run_cdi_example_never_writes_into_the_cwd_and_honours_a_real_output_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ptycho.model_manager as model_manager
    import ptycho.params as params
    from ptycho.config.config import ModelConfig, TrainingConfig
    from ptycho.raw_data import RawData
    from ptycho.workflows.components import run_cdi_example

    small = RawData.from_scan(sim_scan(1).subset(np.arange(40)))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = TrainingConfig(model=ModelConfig(N=N, n_filters_scale=1), nepochs=1, output_dir=Path())
    amp, phase, results = run_cdi_example(small, None, cfg)
    assert amp is None and phase is None and results["archive"] is None and results["output_dir"] is None
    assert list(cwd.iterdir()) == []
    assert params.get("intensity_scale") == pytest.approx(results["intensity_scale"])
    assert model_manager.save(tmp_path / "saved") == tmp_path / "saved" / "wts.h5.zip"
    run_dir = tmp_path / "run"
    cfg.output_dir = run_dir
    _, _, results = run_cdi_example(small, None, cfg)
    assert results["archive"] == run_dir / "wts.h5.zip" and results["archive"].is_file()
    assert (run_dir / "checkpoints").is_dir() and list(cwd.iterdir()) == []


def test_supervised_training_cuts_labels_from_the_object() -> None:
    """Labels are cut in the convention reconstructions are stitched in (ptychodus's: patch centre (N-1)/2 on
    the position), exactly at sub-pixel positions."""
    import dataclasses

    from ptycho.workflows.components import _with_object_patches

    scan = sim_scan(1)
    h, w = scan.obj.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    smooth = dataclasses.replace(scan, obj=_smooth(yy, xx).astype(np.complex64), patches=None)
    cut = _with_object_patches(smooth)
    assert cut.patches is not None and cut.patches.shape == scan.patches.shape
    # points whose labels (and the 8-px margin they are cut with) lie inside the object: elsewhere the object
    # is zero-filled, as with any cutting rule
    inside = np.all((scan.positions >= N / 2 + 8) & (scan.positions <= np.array([w, h]) - 1 - N / 2 - 8), axis=1)
    assert inside.sum() > 10
    expected = _smooth_patches(scan.positions[inside], (N - 1) / 2)
    np.testing.assert_allclose(cut.patches[inside], expected, atol=1e-3)  # measured 3e-4
    # half-integer positions put pixel N//2 on whole pixels: the labels are the object's pixels exactly
    half = dataclasses.replace(scan, positions=np.round(scan.positions) - 0.5, patches=None)
    np.testing.assert_allclose(_with_object_patches(half).patches, _ptychodus_patches(scan.obj, half.positions),
                               atol=1e-6)
