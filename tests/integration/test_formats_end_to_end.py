"""The same scan stored as NPZ, HDF5 (gzip) and CXI trains, reconstructs and refines to the same result,
and the model archive records the physical geometry of its training data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.config import (
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    RefineConfig,
    SimulationConfig,
    TrainingConfig,
)
from ptychopinn.data.scan import ScanData

PIXEL, ENERGY, DISTANCE = 12e-9, 8000.0, 1.5


def _scan() -> ScanData:
    from ptychopinn.simulate import simulate_scan

    sim = simulate_scan(SimulationConfig(N=32, object_size=72, object_kind="grf", overlap=0.7, jitter=0.5,
                                         nphotons=1e8, seed=4))
    pos = sim.positions - (sim.positions.min(axis=0) - np.floor(sim.positions.min(axis=0)))
    # CXI stores translations relative to their minimum, so an integer minimum keeps every sub-pixel
    # fraction (and therefore every result) identical between the formats
    return dataclasses.replace(sim, positions=pos, positions_start=None, obj=None, patches=None,
                               pixel_size_m=PIXEL, energy_ev=ENERGY, distance_m=DISTANCE)


@pytest.mark.slow
def test_npz_hdf5_and_cxi_give_the_same_results(tmp_path: Path) -> None:
    from ptychopinn.inference.predict import reconstruct
    from ptychopinn.io.cxi import save_cxi
    from ptychopinn.io.hdf5 import save_h5_scan
    from ptychopinn.io.npz import save_npz
    from ptychopinn.io.registry import load_scan
    from ptychopinn.models.persist import load_model
    from ptychopinn.refine import refine_scan
    from ptychopinn.workflows import train_model

    scan = _scan()
    paths = {"npz": save_npz(tmp_path / "s.npz", scan),
             "h5": save_h5_scan(tmp_path / "s.h5", scan, compression="gzip"),
             "cxi": save_cxi(tmp_path / "s.cxi", scan)}
    loaded = {k: load_scan(p, units="auto") for k, p in paths.items()}
    for s in loaded.values():
        assert (s.pixel_size_m, s.energy_ev) == pytest.approx((PIXEL, ENERGY))
        assert s.distance_m == pytest.approx(DISTANCE)

    runs = {}
    for k, s in loaded.items():
        out = train_model(s, output_dir=tmp_path / f"run_{k}", model=ModelConfig(N=32, n_filters_scale=1),
                          training=TrainingConfig(nepochs=1, batch_size=16, seed=0),
                          execution=ExecutionConfig(accelerator="cpu", logger="none", enable_progress_bar=False,
                                                    enable_checkpointing=False))
        runs[k] = out
    ref_loss = runs["npz"].history["train_loss"][-1]
    for k in ("h5", "cxi"):
        assert runs[k].history["train_loss"][-1] == pytest.approx(ref_loss, rel=1e-4)
    meta = load_model(runs["npz"].archive).metadata
    assert (meta["pixel_size_m"], meta["energy_ev"], meta["distance_m"]) == (PIXEL, ENERGY, DISTANCE)

    model = runs["npz"].model
    recs = {k: reconstruct(model, s, InferenceConfig(), device="cpu") for k, s in loaded.items()}
    refs = {k: refine_scan(s, RefineConfig(iterations=3, seed=0)) for k, s in loaded.items()}
    for k in ("h5", "cxi"):
        assert recs[k].obj.shape == recs["npz"].obj.shape
        np.testing.assert_allclose(recs[k].obj, recs["npz"].obj, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(refs[k].obj, refs["npz"].obj, rtol=1e-3, atol=1e-4)
