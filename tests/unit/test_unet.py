"""The 'unet' generator: shapes, ranges, support, cost, training signal and archive round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import poisson_before_and_after_steps
from ptychopinn.config import ModelConfig, TrainingConfig
from ptychopinn.models import PtychoPINN, forward_flops
from ptychopinn.models.unet import UNetGenerator
from ptychopinn.training.losses import compute_losses


def _probe(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    return torch.exp(-(xx**2 + yy**2) / (n / 4) ** 2).to(torch.complex64)


def _model(n: int = 32, gridsize: int = 1, **kw: object) -> PtychoPINN:
    torch.manual_seed(0)
    cfg = ModelConfig(N=n, gridsize=gridsize, generator="unet", n_filters_scale=1, **kw)  # type: ignore[arg-type]
    return PtychoPINN(cfg, _probe(n), intensity_scale=10.0)


@pytest.mark.parametrize("gridsize", [1, 2])
@pytest.mark.parametrize("n", [32, 40, 64, 128])
def test_output_shapes_dtypes_and_ranges(n: int, gridsize: int) -> None:
    model = _model(n, gridsize)
    assert isinstance(model.generator, UNetGenerator)
    x = torch.rand(2, gridsize**2, n, n)
    with torch.no_grad():
        obj = model.generator(model.generator_input(x, torch.randn(2, gridsize**2, 2)))
    assert obj.shape == (2, gridsize**2, n, n) and obj.dtype == torch.complex64
    assert float(obj.abs().min()) >= 0 and float(obj.angle().abs().max()) <= math.pi


def test_pad_object_without_probe_big_confines_the_object_to_the_centre() -> None:
    model = _model(32, pad_object=True, probe_big=False)
    with torch.no_grad():
        obj = model.generator(torch.rand(1, 1, 32, 32))[0, 0].abs()
    assert float(obj[8:24, 8:24].min()) > 0
    border = obj.clone()
    border[8:24, 8:24] = 0
    assert float(border.max()) == 0


def test_far_fewer_flops_than_cnn() -> None:
    unet = PtychoPINN(ModelConfig(N=64, generator="unet", n_filters_scale=2), _probe(64), 10.0)
    cnn = PtychoPINN(ModelConfig(N=64, generator="cnn", n_filters_scale=2), _probe(64), 10.0)
    f_unet, f_cnn = forward_flops(unet.generator, 64, 1), forward_flops(cnn.generator, 64, 1)
    assert f_unet < 0.2 * f_cnn  # measured 0.23 vs 1.56 GFLOP per pattern
    assert 0.2e9 < f_unet < 0.3e9
    default = PtychoPINN(ModelConfig(N=64), _probe(64), 10.0)
    assert 0.04e9 < forward_flops(default.generator, 64, 1) < 0.08e9  # measured 0.060: width 1 by default


def test_training_reduces_the_physics_loss_and_reaches_every_weight() -> None:
    model = _model(32)
    x = torch.rand(4, 1, 32, 32) * 2
    off = torch.zeros(4, 1, 2)
    tc = TrainingConfig()
    compute_losses(model, x, off, tc)["loss"].backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0
               for p in model.generator.parameters())
    start, end = poisson_before_and_after_steps(model, x, off, steps=20)
    assert end < start


def test_archive_round_trip_rebuilds_the_unet(tmp_path: Path) -> None:
    from ptychopinn.models.persist import load_model, save_model

    model = _model(32, gridsize=2)
    path = save_model(tmp_path, model)
    loaded = load_model(path).model
    assert isinstance(loaded.generator, UNetGenerator) and loaded.config.generator == "unet"
    x, off = torch.rand(2, 4, 32, 32), torch.zeros(2, 4, 2)
    with torch.no_grad():
        expected = model.eval().predict_patches(x, off).numpy()
        np.testing.assert_array_equal(loaded.predict_patches(x, off).numpy(), expected)
