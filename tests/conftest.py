"""Suite-wide settings and shared fixtures (their building blocks live in ``tests/helpers.py``).

Under pytest-xdist (``make test`` runs two workers on two cores) each worker uses one thread: two
single-threaded workers finish this suite's many small torch workloads sooner than one worker whose two
threads mostly wait on each other. Session-scoped fixtures are built once per worker process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ptychopinn.data.scan import ScanData

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # also inherited by the subprocesses tests start
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_scan() -> ScanData:
    """:func:`helpers.tiny_scan`: 24 points, N=32 (ScanData; do not modify its arrays in place)."""
    from helpers import tiny_scan as make

    return make()


@pytest.fixture(scope="session")
def tiny_scan_path(tmp_path_factory: pytest.TempPathFactory, tiny_scan: ScanData) -> Path:
    """The tiny scan as a scan NPZ (legacy key names, amplitudes); tests must not modify the file."""
    from ptychopinn.io.npz import save_npz

    return save_npz(tmp_path_factory.mktemp("tiny_scan") / "scan.npz", tiny_scan)


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory, tiny_scan: ScanData) -> Path:
    """A training output directory holding ``wts.h5.zip`` of a model trained for one epoch on the tiny scan
    (N=32, gridsize 1, n_filters_scale 1, seed 0), for tests that need some trained archive to load or
    reconstruct from and do not check training itself. Tests must not write into it."""
    from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
    from ptychopinn.workflows import train_model

    out = tmp_path_factory.mktemp("tiny_model")
    train_model(tiny_scan, output_dir=out, model=ModelConfig(N=32, n_filters_scale=1),
                training=TrainingConfig(nepochs=1, batch_size=8, seed=0),
                execution=ExecutionConfig(accelerator="cpu", logger="none", enable_progress_bar=False))
    assert (out / "wts.h5.zip").is_file()
    return out


@pytest.fixture(params=["cpu", "cuda"])
def device(request: pytest.FixtureRequest) -> str:
    """Each torch device a test must work on: 'cpu' always, 'cuda' where a CUDA GPU is present (skipped
    otherwise)."""
    import torch

    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return request.param
