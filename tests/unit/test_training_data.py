"""GroupedDataset / PtychoDataModule: batch gathering, normalisation, splits, scales, loaders."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.data.grouping import group_positions
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.training.data import GroupedDataset, PtychoDataModule, passthrough_collate

N = 32


def _scan(m: int = 60, seed: int = 0, with_patches: bool = True, scale: float = 3.0) -> ScanData:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(m)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:m]
    positions = 40.0 + 6.0 * grid + rng.uniform(-0.5, 0.5, (m, 2))
    diffraction = (scale * rng.random((m, N, N))).astype(np.float32)
    probe = np.ones((N, N), np.complex64)
    patches = None
    if with_patches:
        patches = (rng.random((m, N, N)) * np.exp(1j * rng.random((m, N, N)))).astype(np.complex64)
    return ScanData(diffraction=diffraction, positions=positions, probe=probe, patches=patches)


def test_batch_gather_equals_per_sample_values() -> None:
    scan = _scan()
    groups = group_positions(scan.positions, 2, neighbor_count=5, seed=3)
    ds = GroupedDataset(scan.diffraction, groups, 0.7, scan.patches)
    idx = [5, 0, 17, 17, 33]
    batch = ds.__getitems__(idx)
    assert batch["x"].shape == (5, 4, N, N) and batch["x"].dtype == torch.float32
    assert batch["offsets"].shape == (5, 4, 2) and batch["offsets"].dtype == torch.float32
    assert batch["y"].shape == (5, 4, N, N) and batch["y"].dtype == torch.complex64
    for row, i in enumerate(idx):
        one = ds[i]
        for key in ("x", "offsets", "y"):
            assert torch.equal(batch[key][row], one[key])
        members = groups.indices[i]
        np.testing.assert_allclose(one["x"].numpy(), 0.7 * scan.diffraction[members], rtol=1e-6)
        np.testing.assert_allclose(one["offsets"].numpy(), groups.relative_offsets[i], atol=1e-5)
        np.testing.assert_array_equal(one["y"].numpy(), scan.patches[members])
    assert len(ds) == groups.n_groups
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_no_labels_key_without_patches_and_collate_stacks_lists() -> None:
    scan = _scan(with_patches=False)
    groups = group_positions(scan.positions, 1)
    ds = GroupedDataset(scan.diffraction, groups, 1.0)
    batch = ds.__getitems__([0, 1])
    assert set(batch) == {"x", "offsets"}
    assert passthrough_collate(batch) is batch
    stacked = passthrough_collate([ds[0], ds[1]])
    assert torch.equal(stacked["x"], batch["x"]) and torch.equal(stacked["offsets"], batch["offsets"])


def test_dataset_rejects_bad_inputs() -> None:
    scan = _scan(with_patches=False)
    groups = group_positions(scan.positions, 1)
    with pytest.raises(ConfigError, match="input_scale"):
        GroupedDataset(scan.diffraction, groups, float("nan"))
    with pytest.raises(DataFormatError, match="indices"):
        GroupedDataset(scan.diffraction[:10], groups, 1.0)
    with pytest.raises(DataFormatError, match="patches"):
        GroupedDataset(scan.diffraction, groups, 1.0, np.zeros((3, N, N), np.complex64))


def test_memmap_is_read_lazily_and_pickles_by_reference(tmp_path) -> None:
    scan = _scan(with_patches=False)
    path = tmp_path / "diff.npy"
    np.save(path, scan.diffraction)
    mm = np.load(path, mmap_mode="r")
    on_disk = ScanData(diffraction=mm, positions=scan.positions, probe=scan.probe)
    groups = group_positions(scan.positions, 1)
    ds = GroupedDataset(on_disk.diffraction, groups, 2.0)
    blob = pickle.dumps(ds)
    # The pickle refers to the file instead of carrying the 60*32*32*4-byte stack.
    assert len(blob) < scan.diffraction.nbytes // 4
    clone = pickle.loads(blob)
    assert isinstance(clone.diffraction, np.memmap)
    assert torch.equal(clone.__getitems__([3, 9])["x"], ds.__getitems__([3, 9])["x"])


@pytest.mark.parametrize("gridsize", [1, 2])
def test_normalisation_gives_mean_energy_quarter_n_squared(gridsize: int) -> None:
    scan = _scan(scale=123.0)
    dm = PtychoDataModule(scan, ModelConfig(N=N, gridsize=gridsize),
                          TrainingConfig(val_fraction=0.0, neighbor_count=4))
    assert dm.n_val_groups == 0 and not dm.has_val
    ds = dm.train_dataset
    x = ds.__getitems__(list(range(len(ds))))["x"].double()
    # Mean over the distinct training patterns of sum X^2 is exactly (N/2)^2.
    flat_idx, first = np.unique(ds.groups.indices.ravel(), return_index=True)
    per_pattern = (x.reshape(-1, N, N) ** 2).sum(dim=(1, 2)).numpy()[first]
    assert per_pattern.mean() == pytest.approx((N / 2) ** 2, rel=1e-5)
    assert len(flat_idx) == len(first)


def test_scales_measured_and_configured() -> None:
    scan = _scan()
    cfg = ModelConfig(N=N)
    measured = PtychoDataModule(scan, cfg, TrainingConfig(val_fraction=0.0))
    energy = float((scan.diffraction.astype(np.float64) ** 2).sum(axis=(1, 2)).mean())
    assert measured.nphotons_source == "measured"
    assert measured.nphotons == pytest.approx(energy, rel=1e-9)
    # With the measured dose the photon scale undoes the input normalisation exactly: s = 1/a.
    assert measured.intensity_scale == pytest.approx(1.0 / measured.input_scale, rel=1e-9)
    fixed = PtychoDataModule(scan, cfg, TrainingConfig(val_fraction=0.0, nphotons=1e6))
    assert fixed.nphotons_source == "config" and fixed.nphotons == 1e6
    assert fixed.intensity_scale == pytest.approx(1e3 / (N / 2))


def test_holdout_split_sizes_disjoint_and_deterministic() -> None:
    scan = _scan()
    cfg, tcfg = ModelConfig(N=N), TrainingConfig(val_fraction=0.2, subsample_seed=7)
    a = PtychoDataModule(scan, cfg, tcfg)
    b = PtychoDataModule(scan, cfg, tcfg)
    assert (a.n_train_groups, a.n_val_groups) == (48, 12)
    np.testing.assert_array_equal(a.val_dataset.groups.indices, b.val_dataset.groups.indices)
    tr, va = set(a.train_dataset.groups.indices[:, 0]), set(a.val_dataset.groups.indices[:, 0])
    assert not tr & va and len(tr | va) == 60
    c = PtychoDataModule(scan, cfg, tcfg.replace(subsample_seed=8))
    assert not np.array_equal(a.val_dataset.groups.indices, c.val_dataset.groups.indices)
    assert a.val_input_scale == a.input_scale
    tiny = PtychoDataModule(scan, cfg, TrainingConfig(val_fraction=0.001))
    assert tiny.n_val_groups == 1  # a positive fraction always keeps at least one group


def test_separate_val_scan_uses_its_own_input_scale() -> None:
    train, val = _scan(seed=0, scale=1.0), _scan(m=30, seed=1, scale=5.0)
    dm = PtychoDataModule(train, ModelConfig(N=N), TrainingConfig(), val=val)
    assert dm.n_train_groups == 60 and dm.n_val_groups == 30
    assert dm.val_input_scale == pytest.approx(dm.input_scale / 5.0, rel=1e-2)
    vx = dm.val_dataset.__getitems__(list(range(30)))["x"].double()
    assert float((vx ** 2).sum(dim=(-1, -2)).mean()) == pytest.approx((N / 2) ** 2, rel=1e-5)


def test_config_errors() -> None:
    scan = _scan(with_patches=False)
    with pytest.raises(ConfigError, match="set N to 32"):
        PtychoDataModule(scan, ModelConfig(N=64), TrainingConfig())
    with pytest.raises(ConfigError, match="supervised"):
        PtychoDataModule(scan, ModelConfig(N=N, model_type="supervised"), TrainingConfig())


def test_loaders_shuffle_seeded_and_batch_fully() -> None:
    scan = _scan()
    dm = PtychoDataModule(scan, ModelConfig(N=N), TrainingConfig(batch_size=16, val_fraction=0.0, seed=5),
                          ExecutionConfig(num_workers=0))
    first = [b["x"] for b in dm.train_dataloader()]
    again = [b["x"] for b in dm.train_dataloader()]
    assert [t.shape[0] for t in first] == [16, 16, 16, 12]
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    ordered = torch.cat([b["x"] for b in dm._loader(dm.train_dataset, shuffle=False)])
    assert not torch.equal(torch.cat(first), ordered)  # actually shuffled
    assert dm.val_dataloader() == []
    seq = PtychoDataModule(scan, ModelConfig(N=N), TrainingConfig(val_fraction=0.0, sequential_sampling=True))
    assert torch.equal(torch.cat([b["x"] for b in seq.train_dataloader()]), ordered)


def test_loader_with_worker_processes() -> None:
    scan = _scan()
    dm = PtychoDataModule(scan, ModelConfig(N=N), TrainingConfig(batch_size=8, val_fraction=0.2),
                          ExecutionConfig(num_workers=1))
    loader = dm.val_dataloader()
    assert loader.persistent_workers
    got = torch.cat([b["x"] for b in loader])
    want = dm.val_dataset.__getitems__(list(range(dm.n_val_groups)))["x"]
    assert torch.equal(got, want)
