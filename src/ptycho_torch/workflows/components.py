"""``*_torch`` workflow functions of the reference PyTorch backend.

They are the same implementation as :mod:`ptycho.workflows.components` (one code path, same returned objects):
each function here delegates to its ``ptycho`` counterpart. ``config`` is a ``ptycho.config.config.TrainingConfig``
(or ``InferenceConfig`` for reassembly, which only reads nothing but the model), ``train_data``/``test_data`` a
``ptycho.raw_data.RawData``, a core ``ScanData`` or an NPZ path.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ptycho.workflows import components as _impl
from ptychopinn.errors import ConfigError

__all__ = ["load_inference_bundle_torch", "reassemble_cdi_image_torch", "run_cdi_example_torch",
           "train_cdi_model_torch"]


def _no_execution_config(execution_config: Any) -> None:
    if execution_config is not None:
        raise ConfigError("execution_config: expected None (these workflows run with ptychopinn's default "
                          "execution: auto accelerator, one device), found "
                          f"{type(execution_config).__name__}; use ptychopinn.workflows.train_model for control")


def train_cdi_model_torch(train_data: Any, test_data: Any, config: Any, execution_config: Any = None) -> dict[str, Any]:
    """Train and return the results dict of :func:`ptycho.workflows.components.train_cdi_model`
    (``results['backend'] == 'pytorch'``, ``results['model']`` the trained core model, ``history`` ...)."""
    _no_execution_config(execution_config)
    return _impl.train_cdi_model(train_data, test_data, config)


def run_cdi_example_torch(train_data: Any, test_data: Any, config: Any, flip_x: bool = False, flip_y: bool = False,
                          transpose: bool = False, M: int = 20, do_stitching: bool = False,  # noqa: N803
                          execution_config: Any = None) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Train (and with ``do_stitching`` reconstruct ``test_data``): ``(amplitude [H, W] float32 | None,
    phase [H, W] float32 radians | None, results)`` exactly as :func:`ptycho.workflows.components.run_cdi_example`."""
    _no_execution_config(execution_config)
    return _impl.run_cdi_example(train_data, test_data, config, flip_x=flip_x, flip_y=flip_y, transpose=transpose,
                                 M=M, do_stitching=do_stitching)


def load_inference_bundle_torch(bundle_dir: str | os.PathLike[str], model_name: str = "diffraction_to_obj",
                                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``bundle_dir`` (a directory holding ``wts.h5.zip``, or the archive): ``({model_name: model}, params)``
    where ``model`` and ``params`` are what :func:`ptycho.workflows.components.load_inference_bundle` returns."""
    model, params = _impl.load_inference_bundle(bundle_dir)
    return {model_name: model}, params


def reassemble_cdi_image_torch(test_data: Any, config: Any = None, flip_x: bool = False, flip_y: bool = False,
                               transpose: bool = False, M: int = 20,  # noqa: N803
                               train_results: dict[str, Any] | None = None, execution_config: Any = None,
                               ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Reconstruct ``test_data`` with ``train_results['model']`` (default: the model trained or loaded last in
    this process): ``(amplitude [H, W] float32, phase [H, W] float32, {'obj', 'backend': 'pytorch'})``;
    the object is :func:`ptycho.workflows.components.reassemble_cdi_image`'s."""
    _no_execution_config(execution_config)
    if train_results is not None:
        if "model" not in train_results:
            raise ConfigError("train_results: expected the dict returned by train_cdi_model_torch (key 'model'), "
                              f"found keys {sorted(train_results)}; pass that dict or None")
        model = train_results["model"]
    else:
        model = _impl.last_model().model
    model = getattr(model, "model", model) if not hasattr(model, "predict_patches") else model
    obj = _impl.reassemble_cdi_image(test_data, model, flip_x, flip_y, transpose, M)
    return (np.abs(obj).astype(np.float32), np.angle(obj).astype(np.float32),
            {"obj": obj, "backend": "pytorch"})
