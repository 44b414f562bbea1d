"""ptychopinn.training: Lightning-based training of PtychoPINN models.

Public entry point: :func:`train` (returns a :class:`TrainResult`; raises :class:`TrainingDivergedError`
when the loss becomes non-finite), or the same run in two steps, :func:`prepare_training` then
:meth:`TrainingRun.fit`, for a caller that adds callbacks or its own Lightning module (all in
``training.run``). Building blocks: :class:`PtychoDataModule` / :class:`GroupedDataset` (``training.data``),
:class:`PINNLightningModule` (``training.module``) and :func:`build_trainer` (``training.trainer``).

The names are resolved lazily, so ``import ptychopinn.training`` does not import torch or Lightning until
one of them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "ptychopinn.training.run",
    "TrainResult": "ptychopinn.training.run",
    "TrainingDivergedError": "ptychopinn.training.run",
    "TrainingRun": "ptychopinn.training.run",
    "prepare_training": "ptychopinn.training.run",
    "GroupedDataset": "ptychopinn.training.data",
    "PtychoDataModule": "ptychopinn.training.data",
    "PINNLightningModule": "ptychopinn.training.module",
    "build_trainer": "ptychopinn.training.trainer",
    "LossHistory": "ptychopinn.training.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ptychopinn.training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
