"""Batched prediction and streaming reconstruction (src/ptychopinn/inference/predict.py).

Most tests use a test double for the network: a module with the ``predict_patches`` signature that
returns the TRUE object patches. Each diffraction pattern encodes its own scan position (pixel
[0, 0] = 1, [0, 1] = x, [0, 2] = y), so the double can recover every member's absolute position from
its normalised input alone and cut the truth there; a correct pipeline must then stitch the truth.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.config import InferenceConfig, ModelConfig
from ptychopinn.data.normalize import input_scale
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.inference.predict import Reconstruction, iter_predictions, reconstruct, scan_groups
from ptychopinn.inference.stitch import stitch_patches
from ptychopinn.physics.patches import extract_patches

N = 32


class TruthModel(torch.nn.Module):
    """Test double: returns the true object patches centred on each member's encoded position."""

    def __init__(self, truth: np.ndarray, gridsize: int, n: int = N) -> None:
        super().__init__()
        self.config = ModelConfig(N=n, gridsize=gridsize)
        self.register_buffer("truth", torch.from_numpy(truth))
        self.input_refs: list[torch.Tensor] = []

    def predict_patches(self, x: torch.Tensor, relative_offsets: torch.Tensor) -> torch.Tensor:
        b, c, n, _ = x.shape
        assert x.dtype == torch.float32 and relative_offsets.shape == (b, c, 2)
        ref = x[:, :, 0, 0]
        pos = (x[:, :, 0, 1:3] / ref[..., None]).double().round()
        # The relative offsets handed to the model must be member minus group centre.
        centre = pos.mean(dim=1, keepdim=True)
        torch.testing.assert_close(relative_offsets.double(), pos - centre, atol=1e-4, rtol=0)
        self.input_refs.append(ref.cpu())
        return extract_patches(self.truth, pos.reshape(-1, 2), n).reshape(b, c, n, n)


def _truth(h: int = 96, w: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1, (h, w)) * np.exp(1j * rng.uniform(-3, 3, (h, w)))).astype(np.complex64)


def _scan(truth: np.ndarray, positions: np.ndarray, n: int = N) -> ScanData:
    m = len(positions)
    diff = np.zeros((m, n, n), np.float32)
    diff[:, 0, 0] = 1.0
    diff[:, 0, 1:3] = positions
    diff[:, n // 2, n // 2] = 3.0  # a little extra energy so the input scale is not trivial
    return ScanData(diffraction=diff, positions=positions, probe=np.ones((n, n), np.complex64), obj=truth)


def _raster(x0: int, y0: int, step: int, nx: int, ny: int, order_seed: int | None = None) -> np.ndarray:
    xs, ys = np.meshgrid(x0 + step * np.arange(nx), y0 + step * np.arange(ny))
    pos = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    if order_seed is not None:  # shuffled scan order: stitching must not depend on it
        pos = pos[np.random.default_rng(order_seed).permutation(len(pos))]
    return pos


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_reconstruct_with_true_patches_gives_the_truth(gridsize: int, device: str) -> None:
    truth = _truth()
    pos = _raster(20, 18, 4, 15, 14, order_seed=gridsize)
    scan = _scan(truth, pos)
    model = TruthModel(truth, gridsize)
    rec = reconstruct(model, scan, InferenceConfig(batch_size=16), device=device)
    assert isinstance(rec, Reconstruction)
    assert rec.window == 10 and rec.origin == (0.0, 0.0)
    assert rec.n_patterns == len(pos) and rec.n_groups == len(pos)
    assert rec.obj.dtype == np.complex64 and rec.coverage.dtype == np.float32
    # Scanned region: rows 18-5 .. 18+52+4, cols 20-5 .. 20+56+4 (window 10 -> -5 .. +4).
    region = np.zeros(rec.obj.shape, bool)
    region[13:75, 15:81] = True
    assert (rec.coverage[region] >= 1).all()
    assert (rec.coverage[~region] == 0).all()
    np.testing.assert_allclose(rec.obj[region], truth[:rec.obj.shape[0], :rec.obj.shape[1]][region],
                               rtol=0, atol=1e-5)
    assert np.all(rec.obj[~region] == 0)
    # Every scan point seeded a group; at gridsize > 1 each point is also a neighbour of others.
    if gridsize > 1:
        assert rec.coverage[region].mean() > 1.5 * gridsize**2


def test_gridsize2_members_are_stitched_at_their_own_positions_not_the_centre() -> None:
    # A canary for the reference bug (pitfall 8): the same scan stitched with member patches placed at the
    # group centre would differ from the truth by far more than the tolerance above.
    truth = _truth(seed=5)
    scan = _scan(truth, _raster(20, 18, 4, 15, 14))
    groups = scan_groups(scan.positions, 2)
    model = TruthModel(truth, 2)
    pats, wrong = [], []
    for p, member_pos in iter_predictions(model, scan, groups, batch_size=50):
        pats.append(p.reshape(-1, N, N))
        centre = member_pos.mean(axis=1, keepdims=True).repeat(4, axis=1)
        wrong.append(centre.reshape(-1, 2))
    bad, cov = stitch_patches(torch.cat(pats), np.concatenate(wrong), 10, shape=truth.shape)
    good = reconstruct(model, scan, object_shape=truth.shape, device="cpu").obj
    covered = cov > 0
    assert np.abs(good[covered] - truth[covered]).max() < 1e-5
    assert np.abs(bad[covered] - truth[covered]).mean() > 0.1


def test_input_is_normalised_by_the_scan_statistics() -> None:
    truth = _truth()
    scan = _scan(truth, _raster(20, 18, 6, 5, 5))
    model = TruthModel(truth, 1)
    reconstruct(model, scan, device="cpu")
    a = input_scale(scan.diffraction)
    seen = torch.cat([r.reshape(-1) for r in model.input_refs])
    torch.testing.assert_close(seen, torch.full_like(seen, a))
    # An explicit scale is used as given.
    model.input_refs.clear()
    rec = reconstruct(model, scan, device="cpu", input_scale=2.5)
    assert rec.input_scale == 2.5
    assert torch.all(torch.cat([r.reshape(-1) for r in model.input_refs]) == 2.5)


def test_memory_mapped_scan_gives_the_same_result(tmp_path) -> None:
    truth = _truth()
    scan = _scan(truth, _raster(20, 18, 5, 10, 9))
    path = tmp_path / "diff.npy"
    np.save(path, scan.diffraction)
    mapped = ScanData(diffraction=np.load(path, mmap_mode="r"), positions=scan.positions, probe=scan.probe)
    model = TruthModel(truth, 2)
    a = reconstruct(model, scan, InferenceConfig(batch_size=7), device="cpu")
    b = reconstruct(model, mapped, InferenceConfig(batch_size=7), device="cpu")
    np.testing.assert_array_equal(a.obj, b.obj)
    np.testing.assert_array_equal(a.coverage, b.coverage)


def test_iter_predictions_batches_and_positions() -> None:
    truth = _truth()
    scan = _scan(truth, _raster(20, 18, 5, 7, 6))
    groups = scan_groups(scan.positions, 2)
    model = TruthModel(truth, 2)
    model.train()
    out = list(iter_predictions(model, scan, groups, batch_size=8))
    assert model.training  # mode restored after the loop
    assert [p.shape[0] for p, _ in out] == [8, 8, 8, 8, 8, 2]
    assert all(p.dtype == torch.complex64 and p.shape[1:] == (4, N, N) for p, _ in out)
    member_pos = np.concatenate([m for _, m in out])
    np.testing.assert_allclose(member_pos, scan.positions[groups.indices], atol=1e-9)
    # channel 0 is the seed: every scan point once, in scan order
    np.testing.assert_array_equal(groups.indices[:, 0], np.arange(scan.n_points))
    one = list(iter_predictions(model, scan, groups, batch_size=64))
    assert len(one) == 1
    torch.testing.assert_close(one[0][0], torch.cat([p for p, _ in out]))


def test_pattern_size_mismatch_is_a_data_format_error() -> None:
    truth = _truth()
    scan = _scan(truth, _raster(40, 40, 5, 3, 3), n=32)
    model = TruthModel(truth, 1, n=64)
    with pytest.raises(DataFormatError, match="model was trained on 64x64 patterns but the scan has 32x32"):
        reconstruct(model, scan, device="cpu")


def test_bad_arguments() -> None:
    truth = _truth()
    scan = _scan(truth, _raster(20, 20, 5, 3, 3))
    model = TruthModel(truth, 1)
    groups = scan_groups(scan.positions, 1)
    with pytest.raises(ConfigError, match="precision"):
        next(iter_predictions(model, scan, groups, precision="8-bit"))
    with pytest.raises(ConfigError, match="batch_size"):
        next(iter_predictions(model, scan, groups, batch_size=0))
    with pytest.raises(DataFormatError, match="expects 4"):
        next(iter_predictions(TruthModel(truth, 2), scan, groups))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            reconstruct(model, scan, device="cuda")


def test_object_shape_and_progress_bar(capsys) -> None:
    truth = _truth()
    scan = _scan(truth, _raster(20, 18, 4, 6, 5))
    rec = reconstruct(TruthModel(truth, 1), scan, object_shape=truth.shape, device="cpu", progress=True)
    assert rec.obj.shape == truth.shape and rec.origin == (0.0, 0.0)
    covered = rec.coverage > 0
    np.testing.assert_allclose(rec.obj[covered], truth[covered], atol=1e-5)
    assert "reconstruct" in capsys.readouterr().err


def test_phase_sync_falls_back_to_streaming_when_the_windows_would_not_fit(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    truth = _truth()
    scan = _scan(truth, _raster(20, 18, 4, 15, 14))
    model = TruthModel(truth, 1)
    synced = reconstruct(model, scan, InferenceConfig(stitch_sync="phase"), device="cpu")
    monkeypatch.setenv("PTYCHOPINN_MAX_MEMORY", "400K")  # the canvas fits, 210 windows of 10 x 10 do not
    with caplog.at_level("WARNING", logger="ptychopinn.inference.predict"):
        streamed = reconstruct(model, scan, InferenceConfig(stitch_sync="phase"), device="cpu")
    assert "stitching without phase synchronisation" in caplog.text
    plain = reconstruct(model, scan, InferenceConfig(stitch_sync="off"), device="cpu")
    np.testing.assert_array_equal(streamed.obj, plain.obj)
    # consistent (true) patches: synchronisation changes at most a global phase
    region = plain.coverage > 0
    ratio = synced.obj[region] / plain.obj[region]
    np.testing.assert_allclose(np.abs(ratio), 1.0, atol=1e-4)
    assert np.ptp(np.angle(ratio)) < 1e-3


@pytest.mark.parametrize(("gridsize", "mode", "synced"), [(1, "auto", True), (2, "auto", False), (2, "phase", True),
                                                         (1, "off", False)])
def test_auto_sync_synchronises_single_pattern_networks_only(monkeypatch: pytest.MonkeyPatch, gridsize: int,
                                                              mode: str, synced: bool) -> None:
    import ptychopinn.inference.phase_sync as phase_sync

    calls: list[int] = []
    real = phase_sync.synchronize

    def counting(windows: torch.Tensor, corners: np.ndarray, **kw: object) -> np.ndarray:
        calls.append(int(windows.shape[0]))
        return real(windows, corners, **kw)

    monkeypatch.setattr(phase_sync, "synchronize", counting)
    truth = _truth()
    scan = _scan(truth, _raster(20, 18, 4, 15, 14))
    reconstruct(TruthModel(truth, gridsize), scan, InferenceConfig(stitch_sync=mode), device="cpu")
    assert bool(calls) == synced


def test_real_model_batches_stream_into_the_same_object_and_bf16_is_close() -> None:
    from ptychopinn.models.pinn import PtychoPINN

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(N, N)) + 1j * rng.normal(size=(N, N))
    model = PtychoPINN(ModelConfig(N=N, gridsize=2, n_filters_scale=1), probe=probe, intensity_scale=10.0)
    pos = _raster(20, 18, 5, 6, 5) + rng.uniform(-0.5, 0.5, (30, 2))
    scan = ScanData(diffraction=rng.uniform(0, 1, (30, N, N)).astype(np.float32), positions=pos, probe=probe)
    plain = InferenceConfig(batch_size=4, stitch_taper=0.0, stitch_sync="off")  # what stitch_patches does
    rec = reconstruct(model, scan, plain, device="cpu")
    assert np.isfinite(rec.obj).all() and np.abs(rec.obj).max() > 0
    out = list(iter_predictions(model, scan, scan_groups(pos, 2), batch_size=64))
    patches = torch.cat([p.reshape(-1, N, N) for p, _ in out])
    member_pos = np.concatenate([m.reshape(-1, 2) for _, m in out])
    obj, cov = stitch_patches(patches, member_pos, rec.window, shape=rec.obj.shape, origin=rec.origin)
    np.testing.assert_allclose(cov, rec.coverage, atol=1e-5)
    np.testing.assert_allclose(obj, rec.obj, atol=1e-5)
    # bf16 on a CPU without bf16 units is slow: a few points suffice to check the autocast path.
    small = scan.subset(np.arange(6))
    fp = reconstruct(model, small, plain, device="cpu")
    bf = reconstruct(model, small, plain.replace(precision="bf16-mixed"), device="cpu")
    assert bf.obj.dtype == np.complex64
    rel_err = np.abs(bf.obj - fp.obj).mean() / np.abs(fp.obj).mean()
    assert 0 < rel_err < 0.05, rel_err


@pytest.mark.parametrize("refine", [False, True])
def test_auto_sync_keeps_the_network_image_and_starts_refinement_without_it(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                                            refine: bool) -> None:
    """The network's image is synchronised with or without refinement (network_reconstruction.npz is what `infer
    --refine 0` writes); refinement starts from the same windows without synchronisation (it ends better)."""
    from types import SimpleNamespace

    import ptychopinn.inference.phase_sync as phase_sync
    import ptychopinn.models.persist as persist
    import ptychopinn.refine as refine_pkg
    from ptychopinn.config import RefineConfig
    from ptychopinn.workflows import reconstruct_scan

    calls: list[int] = []
    real = phase_sync.synchronize
    monkeypatch.setattr(phase_sync, "synchronize", lambda w, c, **kw: calls.append(1) or real(w, c, **kw))
    starts: list[np.ndarray] = []
    real_refine = refine_pkg.refine_scan
    monkeypatch.setattr(refine_pkg, "refine_scan",
                        lambda scan, cfg, **kw: starts.append(kw["start"]) or real_refine(scan, cfg, **kw))
    truth = _truth()
    model = TruthModel(truth, 1)
    monkeypatch.setattr(persist, "load_model", lambda path: SimpleNamespace(model=model, path=path))
    scan = _scan(truth, _raster(20, 18, 4, 15, 14))
    out = reconstruct_scan(tmp_path / "wts.h5.zip", scan, output_dir=tmp_path / "out", progress=False,
                           refine=RefineConfig(iterations=1) if refine else None)
    assert calls
    rec = out.reconstruction
    if refine:
        assert rec.unsynchronised is not None and starts[0] is rec.unsynchronised
        assert rec.sync == "phase"
    else:
        assert rec.unsynchronised is None and not starts
