"""The training loss is a list of weighted terms built from the configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig, TrainingConfig
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.models import PtychoPINN
from ptychopinn.physics.losses import amplitude_mae, poisson_loss
from ptychopinn.training.losses import compute_losses, loss_terms

N = 32


def _model(model_type: str = "pinn") -> PtychoPINN:
    torch.manual_seed(0)
    return PtychoPINN(ModelConfig(N=N, model_type=model_type, generator="cnn", n_filters_scale=1),
                      probe=np.ones((N, N), np.complex64), intensity_scale=10.0)


def test_terms_follow_the_weights() -> None:
    assert [t.name for t in loss_terms("pinn", TrainingConfig())] == ["poisson"]
    tc = TrainingConfig(nll_weight=0.5, mae_weight=2.0, realspace_weight=1.0, realspace_mae_weight=3.0)
    terms = {t.name: t for t in loss_terms("pinn", tc)}
    assert {k: t.weight for k, t in terms.items()} == {"poisson": 0.5, "mae": 2.0, "realspace": 3.0}
    assert terms["realspace"].needs_truth and not terms["poisson"].needs_truth
    assert [(t.name, t.weight) for t in loss_terms("supervised", tc)] == [("realspace", 1.0)]


def test_total_is_the_weighted_sum_of_the_terms() -> None:
    model = _model().eval()
    x = torch.rand(3, 1, N, N)
    off = torch.zeros(3, 1, 2)
    tc = TrainingConfig(nll_weight=0.5, mae_weight=2.0)
    with torch.no_grad():
        out = compute_losses(model, x, off, tc)
        _, amp = model(x, off)
        pred = amp * model.amplitude_gain()
        poisson = poisson_loss(pred, x, model.data_intensity_scale)
        mae = amplitude_mae(pred, x)
    assert set(out) == {"loss", "poisson", "mae"}
    torch.testing.assert_close(out["poisson"], poisson)
    torch.testing.assert_close(out["mae"], mae)
    torch.testing.assert_close(out["loss"], 0.5 * poisson + 2.0 * mae)


def test_truth_terms_need_truth() -> None:
    model = _model()
    x, off = torch.rand(2, 1, N, N), torch.zeros(2, 1, 2)
    only_truth = TrainingConfig(nll_weight=0.0, realspace_weight=1.0, realspace_mae_weight=1.0)
    with pytest.raises(ConfigError, match="no active term"):
        compute_losses(model, x, off, only_truth)
    with pytest.raises(DataFormatError, match="supervised training needs ground-truth patches"):
        compute_losses(_model("supervised"), x, off, TrainingConfig())
    y = torch.ones(2, 1, N, N, dtype=torch.complex64)
    assert set(compute_losses(model, x, off, only_truth, y)) == {"loss", "realspace"}
