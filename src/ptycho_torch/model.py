"""``PtychoPINN_Lightning``: the core :class:`~ptychopinn.training.module.PINNLightningModule` under the reference
name, with self-describing checkpoints.

The checkpoint's ``hyper_parameters`` hold the four reference configs (``data_config``, ``model_config``,
``training_config``, ``inference_config``) and the core state (``core``: core model/training configs, intensity
and input scales) as plain dicts, so ``torch.load(path, weights_only=True)`` reads it and
``PtychoPINN_Lightning.load_from_checkpoint(path)`` rebuilds the module on a CPU-only machine with nothing but
that file; the probe travels in the state dict (a buffer of the core model).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ptycho_torch.config_params import config_from_dict, config_to_dict
from ptychopinn.errors import ConfigError
from ptychopinn.training.module import PINNLightningModule

__all__ = ["PtychoPINN_Lightning"]


class PtychoPINN_Lightning(PINNLightningModule):  # noqa: N801 - reference name
    """Lightning module of the PtychoPINN-Torch surface.

    Args:
        model_config, data_config, training_config, inference_config: reference configs
            (:mod:`ptycho_torch.config_params` instances or their dicts).
        core: ``{'model': core ModelConfig dict, 'training': core TrainingConfig dict, 'intensity_scale': float,
            'input_scale': float, 'has_validation': bool}`` — written by ``Trainer._from_lightning`` from the data,
            read back from the checkpoint.
        probe: ``[N, N]`` complex probe; None when loading a checkpoint (the state dict restores it).

    Attributes:
        loss_name / val_loss_name: the epoch metrics logged for the training / validation loss
            ('train_loss' / 'val_loss').
    """

    loss_name = "train_loss"
    val_loss_name = "val_loss"

    def __init__(self, model_config: Any, data_config: Any, training_config: Any, inference_config: Any,
                 core: dict[str, Any] | None = None, probe: Any = None) -> None:
        if not isinstance(core, dict) or not {"model", "training", "intensity_scale", "input_scale"} <= set(core):
            raise ConfigError("PtychoPINN_Lightning: expected core={'model', 'training', 'intensity_scale', "
                              "'input_scale', ...} (from training data or a checkpoint), found "
                              f"{type(core).__name__}; build it with Trainer._from_lightning or load_from_checkpoint")
        n = int(core["model"]["N"])
        probe_arr = np.ones((n, n), np.complex64) if probe is None else probe
        super().__init__(dict(core["model"]), dict(core["training"]), probe_arr, float(core["intensity_scale"]),
                         float(core["input_scale"]), has_validation=bool(core.get("has_validation", False)))
        self.data_config = config_from_dict("data", data_config)
        self.torch_model_config = config_from_dict("model", model_config)
        self.torch_training_config = config_from_dict("training", training_config)
        self.inference_config = config_from_dict("inference", inference_config)
        plain_core = {"model": dict(self.model_config.to_dict()), "training": dict(self.training_config.to_dict()),
                      "intensity_scale": float(core["intensity_scale"]), "input_scale": float(core["input_scale"]),
                      "has_validation": bool(core.get("has_validation", False))}
        # Replace the parent's hyper-parameters by the self-describing, plain-container set (set directly:
        # Lightning's frame inspection would compare the probe array with the dict).
        self._hparams.clear()
        self._hparams.update({
            "model_config": config_to_dict(self.torch_model_config),
            "data_config": config_to_dict(self.data_config),
            "training_config": config_to_dict(self.torch_training_config),
            "inference_config": config_to_dict(self.inference_config),
            "core": _plain(plain_core),
        })
        self._hparams_initial = copy.deepcopy(self._hparams)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,
                             strict: bool | None = None, weights_only: bool | None = None,
                             **kwargs: Any) -> PtychoPINN_Lightning:
        """Lightning's ``load_from_checkpoint`` with ``weights_only=True`` always (also under
        ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``): a checkpoint is data and never runs code. ``weights_only=False``
        is refused."""
        if weights_only is False:
            raise ConfigError("load_from_checkpoint: weights_only=False is refused (unpickling can run code); "
                              "checkpoints written by this package load with weights_only=True")
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, weights_only=True, **kwargs)

    def configs(self) -> tuple[Any, Any, Any, Any]:
        """``(data_config, model_config, training_config, inference_config)`` reference config instances."""
        return self.data_config, self.torch_model_config, self.torch_training_config, self.inference_config


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, torch.Tensor):
        return v.item()
    return v
