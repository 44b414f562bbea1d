"""The training loss as a list of weighted terms built from the configuration.

Each :class:`LossTerm` is a name, a weight and a function of one :class:`LossBatch` (prediction,
measurement, physics scale and optional ground truth). :func:`loss_terms` builds the active terms from a
:class:`~ptychopinn.config.TrainingConfig`; :func:`compute_losses` evaluates them for a model and a batch.
The physics (forward model) stays in the model; the choice and weighting of terms lives here only.

Adding a term touches two files: a weight field in ``TrainingConfig`` (``config.py``) and one row of
``_PINN_TERMS`` below.

Terms of a ``'pinn'`` model (weights from ``TrainingConfig``):

* ``poisson`` (``nll_weight``): normalised Poisson deviance of the predicted amplitudes against the
  measured ones at the data's photon scale;
* ``mae`` (``mae_weight``): relative amplitude MAE;
* ``realspace`` (``realspace_weight * realspace_mae_weight``): amplitude + phase MAE of the patches
  against ground-truth patches ``Y``; active only when the batch carries ``Y``.

A ``'supervised'`` model has the single term ``realspace`` (weight 1) and needs ``Y``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ptychopinn.config import TrainingConfig
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.physics.losses import amplitude_mae, poisson_loss, realspace_mae

if TYPE_CHECKING:
    from ptychopinn.models.pinn import PtychoPINN


@dataclass(frozen=True)
class LossBatch:
    """What a loss term sees for one batch (B samples of C patterns of N x N pixels).

    ``measured``: ``[B, C, N, N]`` float32 normalised measured amplitudes; ``obj``: ``[B, C, N, N]``
    complex64 predicted object patches; ``predicted``: ``[B, C, N, N]`` float32 predicted amplitudes in the
    same units, gain applied (None for a supervised model, which runs no physics); ``photon_scale``: 0-d
    float32, the data's photon scale ``s0`` (``(s0 * amplitude)**2`` are counts); ``truth``: optional
    ``[B, C, N, N]`` complex ground-truth patches; ``weights``: optional ``[N, N]`` float32 detector-pixel
    weights (1 = measured, 0 = masked), None when every pixel is measured.
    """

    measured: torch.Tensor
    obj: torch.Tensor
    predicted: torch.Tensor | None
    photon_scale: torch.Tensor
    truth: torch.Tensor | None = None
    weights: torch.Tensor | None = None


@dataclass(frozen=True)
class LossTerm:
    """One weighted term: ``weight * fn(batch)``; ``needs_truth`` terms are skipped without ``Y``."""

    name: str
    weight: float
    fn: Callable[[LossBatch], torch.Tensor]
    needs_truth: bool = False


def _poisson(b: LossBatch) -> torch.Tensor:
    assert b.predicted is not None
    return poisson_loss(b.predicted, b.measured, b.photon_scale, b.weights)


def _mae(b: LossBatch) -> torch.Tensor:
    assert b.predicted is not None
    return amplitude_mae(b.predicted, b.measured, b.weights)


def _realspace(b: LossBatch) -> torch.Tensor:
    assert b.truth is not None
    return realspace_mae(b.obj, b.truth)


# (name, weight from the config, function, needs ground truth)
_PINN_TERMS: tuple[tuple[str, Callable[[TrainingConfig], float], Callable[[LossBatch], torch.Tensor], bool], ...] = (
    ("poisson", lambda t: t.nll_weight, _poisson, False),
    ("mae", lambda t: t.mae_weight, _mae, False),
    ("realspace", lambda t: t.realspace_weight * t.realspace_mae_weight, _realspace, True),
)


def loss_terms(model_type: str, training: TrainingConfig) -> list[LossTerm]:
    """The terms with a positive weight for ``model_type`` ('pinn' or 'supervised')."""
    if model_type == "supervised":
        return [LossTerm("realspace", 1.0, _realspace, needs_truth=True)]
    return [LossTerm(name, float(weight(training)), fn, needs_truth)
            for name, weight, fn, needs_truth in _PINN_TERMS if weight(training) > 0]


def compute_losses(model: PtychoPINN, x: torch.Tensor, relative_offsets: torch.Tensor, training: TrainingConfig,
                   y: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Loss terms (0-d float32 tensors) of ``model`` for one batch.

    Args:
        model: the PINN (generator + physics).
        x: ``[B, C, N, N]`` float32 normalised measured amplitudes.
        relative_offsets: ``[B, C, 2]`` (x, y) pixels, member position minus group centre.
        training: the loss weights.
        y: optional ``[B, C, N, N]`` complex ground-truth patches.
        weights: optional ``[N, N]`` detector-pixel weights (1 = measured, 0 = masked): the amplitude
            terms leave masked pixels out.

    Returns:
        ``{'loss': weighted total, name: unweighted value of each active term}``.

    Raises:
        DataFormatError: ``y`` of the wrong shape, or a supervised model without ``y``.
        ConfigError: no term is active (e.g. only real-space weights and no ``y``).
    """
    if y is not None and tuple(y.shape) != tuple(x.shape):
        raise DataFormatError(f"ground-truth patches Y: expected shape {tuple(x.shape)} like the "
                              f"diffraction batch, got {describe_array(y)}; regroup Y with the data")
    supervised = model.config.model_type == "supervised"
    if supervised and y is None:
        raise DataFormatError("supervised training needs ground-truth patches Y in the training file; "
                              "found none: add Y or use model_type='pinn'")
    terms = [t for t in loss_terms(model.config.model_type, training) if y is not None or not t.needs_truth]
    if not terms:
        raise ConfigError("loss weights: expected nll_weight > 0 or mae_weight > 0 (or realspace weights "
                          "with ground truth Y), found no active term; set nll_weight=1")
    if supervised:
        obj, predicted = model.predict_patches(x, relative_offsets), None
    else:
        obj, amp = model(x, relative_offsets)
        predicted = amp * model.amplitude_gain()
    batch = LossBatch(measured=x, obj=obj, predicted=predicted, photon_scale=model.data_intensity_scale, truth=y,
                      weights=weights)
    values = {t.name: t.fn(batch) for t in terms}
    total = sum((t.weight * values[t.name] for t in terms), start=x.new_zeros(()))
    return {"loss": total, **values}
