"""Reference-named workflows used by ptychodus: train (``run_cdi_example``), load a model bundle
(``load_inference_bundle``) and write outputs (``save_outputs``). Adapters over :mod:`ptychopinn`.

Process state. ptychodus trains in one process and then calls ``ptycho.model_manager.save(dir)``, which
takes no model argument; so the model trained (or loaded) last in this process is remembered here and
:func:`last_model` hands it to :mod:`ptycho.model_manager`. Training and loading also write the model's
parameters (``N``, ``gridsize``, ``intensity_scale``, ...) into the legacy dict ``ptycho.params.cfg``.

Output directory. Training writes checkpoints and logs to ``config.output_dir`` when it is a real path;
when it is unset or a placeholder (ptychodus passes ``Path()``), a temporary directory is used and removed
afterwards, so nothing is ever written into the current working directory. The model archive is written
only by ``ptycho.model_manager.save``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptycho import params, tf_helper
from ptycho.config.config import TrainingConfig, to_core_training, usable_output_dir
from ptycho.raw_data import RawData
from ptycho.tf_helper import scan_frame, window_for
from ptycho.workflows.inference_model import InferenceModel
from ptychopinn.config import ExecutionConfig, InferenceConfig
from ptychopinn.config import ModelConfig as CoreModelConfig
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.io.product_h5 import ptychodus_centre_offset
from ptychopinn.models.pinn import PtychoPINN

__all__ = [
    "RememberedModel",
    "last_model",
    "load_inference_bundle",
    "reassemble_cdi_image",
    "run_cdi_example",
    "save_outputs",
    "train_cdi_model",
]

logger = logging.getLogger(__name__)


@dataclass
class RememberedModel:
    """The model trained or loaded last in this process (what ``model_manager.save`` writes).

    ``archive_bytes``: the exact archive written at training time (None for a loaded model, which is
    re-saved from ``model``, ``training`` and ``metadata``).
    """

    model: PtychoPINN
    training: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    archive_bytes: bytes | None = None
    source: str = "trained"


_state: dict[str, RememberedModel] = {}


def last_model() -> RememberedModel:
    """The remembered model; ``RuntimeError`` when none was trained or loaded in this process."""
    try:
        return _state["model"]
    except KeyError:
        raise RuntimeError("no model has been trained or loaded in this process: call run_cdi_example(...) "
                           "(or load_inference_bundle(...)) before ptycho.model_manager.save(...)") from None


def _legacy_model_params(model: PtychoPINN) -> dict[str, Any]:
    cfg: CoreModelConfig = model.config
    return {
        "N": cfg.N,
        "gridsize": cfg.gridsize,
        "n_filters_scale": cfg.n_filters_scale,
        "model_type": cfg.model_type,
        "amp_activation": cfg.amp_activation,
        "object.big": cfg.object_big,
        "probe.big": cfg.probe_big,
        "probe.mask": cfg.probe_mask,
        "pad_object": cfg.pad_object,
        "probe_scale": cfg.probe_scale,
        "gaussian_smoothing_sigma": cfg.gaussian_smoothing_sigma,
        "probe.trainable": cfg.probe_trainable,
        "intensity_scale.trainable": cfg.intensity_scale_trainable,
        "intensity_scale": float(model.intensity_scale.detach().cpu()),
        "backend": "pytorch",
    }


# ------------------------------------------------------------------------------------ training
def _as_scan(data: RawData | ScanData | str | os.PathLike[str], what: str) -> ScanData:
    if isinstance(data, RawData):
        return data.to_scan()
    if isinstance(data, ScanData):
        return data
    if isinstance(data, (str, os.PathLike)):
        return RawData.from_file(data).to_scan()
    raise ConfigError(f"{what}: expected a RawData (or ScanData, or an NPZ path), found {type(data).__name__}; "
                      f"load it with RawData.from_file(path)")


def _with_object_patches(scan: ScanData) -> ScanData:
    """Supervised training needs ground-truth patches; cut them from the scan's object when the file had none
    (as the reference does with ``objectGuess``), in ptychodus's pixel convention, the one reconstructions
    are stitched in (:func:`ptycho.tf_helper.reassemble_position`): patch pixel ``(r, c)`` is object point
    ``(y - (N-1)/2 + r, x - (N-1)/2 + c)``, sampled exactly (integer window + Fourier shift, no blur)."""
    if scan.patches is not None or scan.obj is None:
        return scan
    import dataclasses

    import torch

    from ptychopinn.inference.stitch import shifted_windows
    from ptychopinn.physics.patches import extract_patches
    from ptychopinn.physics.shift import split_positions

    n, margin = scan.N, 8
    # Nearest whole pixel + fraction of the object point under patch pixel N//2; a larger window cut at the
    # whole pixel is moved by minus the fraction and cropped (the margin keeps its border far from the crop).
    corner, frac = split_positions(scan.positions + ptychodus_centre_offset(n), n + 2 * margin)
    centres = (corner + (n + 2 * margin) // 2).astype(np.float64)
    obj = torch.from_numpy(scan.obj)
    patches = np.empty((scan.n_points, n, n), np.complex64)
    for s in range(0, scan.n_points, 1024):
        big = extract_patches(obj, torch.from_numpy(centres[s:s + 1024]), n + 2 * margin)
        patches[s:s + 1024] = shifted_windows(big, torch.from_numpy(-frac[s:s + 1024]), n).numpy()
    return dataclasses.replace(scan, patches=patches)


def _check_n(model: CoreModelConfig, scan: ScanData, what: str) -> None:
    if model.N != scan.N:
        raise ConfigError(f"config.model.N is {model.N} but the {what} patterns are {scan.N}x{scan.N}; "
                          f"set config.model.N = {scan.N}")


def train_cdi_model(train_data: RawData | ScanData | str | os.PathLike[str],
                    test_data: RawData | ScanData | str | os.PathLike[str] | None,
                    config: TrainingConfig) -> dict[str, Any]:
    """Train a PtychoPINN and return the results dict (see :func:`run_cdi_example`).

    ``test_data`` (optional) is the validation set; without it a fraction of the training groups is held
    out. The trained model is remembered for ``ptycho.model_manager.save`` and its parameters are written
    to ``ptycho.params.cfg`` (including ``'intensity_scale'``).
    """
    from ptychopinn.workflows import train_model

    core_model, core_training = to_core_training(config)
    train_scan = _as_scan(train_data, "train_data")
    test_scan = None if test_data is None else _as_scan(test_data, "test_data")
    _check_n(core_model, train_scan, "training")
    if test_scan is not None:
        _check_n(core_model, test_scan, "test")
    if core_model.model_type == "supervised":
        train_scan = _with_object_patches(train_scan)
        test_scan = None if test_scan is None else _with_object_patches(test_scan)
    out_dir = usable_output_dir(config.output_dir)
    with tempfile.TemporaryDirectory(prefix="ptycho-train-") as tmp:
        run_dir = out_dir if out_dir is not None else Path(tmp)
        # A throw-away directory needs no checkpoints or CSV logs.
        execution = ExecutionConfig(enable_progress_bar=False,
                                    logger="csv" if out_dir is not None else "none",
                                    enable_checkpointing=out_dir is not None)
        outcome = train_model(train_scan, output_dir=run_dir, test=test_scan, model=core_model,
                              training=core_training, execution=execution, units="amplitude")
        archive_bytes = Path(outcome.archive).read_bytes()
    model: PtychoPINN = outcome.model
    _state["model"] = RememberedModel(model=model, training=core_training.to_dict(), archive_bytes=archive_bytes)
    legacy = _legacy_model_params(model)
    params.cfg.update(legacy)
    return {
        "history": outcome.history,
        "model": model,
        "model_instance": model,
        "model_wrapper": InferenceModel(model),
        "backend": "pytorch",
        "intensity_scale": legacy["intensity_scale"],
        "epochs_completed": outcome.epochs_completed,
        "train_seconds": outcome.seconds,
        "output_dir": out_dir,
        "archive": outcome.archive if out_dir is not None else None,
        "n_train_points": train_scan.n_points,
    }


def reassemble_cdi_image(test_data: RawData | ScanData, model: PtychoPINN, flip_x: bool = False, flip_y: bool = False,
                         transpose: bool = False, M: int = 20,  # noqa: N803
                         refine_iterations: int | None = None) -> np.ndarray:
    """Reconstruct ``test_data`` with ``model`` into a 2-D complex64 object.

    Every scan point is predicted; member patches are stitched at their own positions with the central
    window of :func:`ptycho.tf_helper.window_for` (``M`` pixels at N=64, scaled with N), in ptychodus's pixel
    convention (as :func:`ptycho.tf_helper.reassemble_position`: the patch centre ``(N-1)/2`` lies on the
    position). Without flips the canvas is the scan object's pixel grid (when the scan has an object) or the
    bounding box of the windows on the object pixel grid (origin (0, 0) unless positions are negative).
    ``flip_x``/``flip_y`` mirror the x/y positions about their mean and ``transpose`` swaps x and y
    (diagnostics for coordinate conventions, as in the reference); then the canvas is the scan frame of
    :func:`ptycho.tf_helper.reassemble_position`. ``refine_iterations``: refine the stitched object with
    that many iterations on the physics (:mod:`ptychopinn.refine`), result on the same canvas; None reads
    :data:`ptycho.tf_helper.REFINE_ENV` (unset = 0, the reference behaviour). Not with flips/transposes.
    """
    from ptychopinn.inference.predict import iter_predictions, scan_groups
    from ptychopinn.inference.stitch import Stitcher, canvas_geometry
    from ptychopinn.runtime import resolve_device

    scan = _as_scan(test_data, "test_data")
    n = scan.N
    window = window_for(int(M), n)
    obj_shape = None
    if isinstance(test_data, RawData) and test_data.objectGuess is not None:
        obj_shape = tuple(test_data.objectGuess.shape)
    elif scan.obj is not None:
        obj_shape = tuple(scan.obj.shape)
    cfg = InferenceConfig.reference(stitch_window=window)
    device = resolve_device(cfg.accelerator)
    centre = scan.positions.mean(axis=0)

    def frame(pos: np.ndarray) -> np.ndarray:
        out = pos.copy()
        if flip_x:
            out[..., 0] = 2 * centre[0] - out[..., 0]
        if flip_y:
            out[..., 1] = 2 * centre[1] - out[..., 1]
        return out[..., ::-1].copy() if transpose else out

    shift = ptychodus_centre_offset(n)
    if flip_x or flip_y or transpose:
        shape, origin = scan_frame(frame(scan.positions), window, n)
    elif obj_shape is not None:
        shape, origin = (int(obj_shape[0]), int(obj_shape[1])), (0.0, 0.0)
    else:
        shape, origin = canvas_geometry(scan.positions + shift, n, window)
    stitcher = Stitcher(shape, window, origin=origin, device=device, taper=cfg.stitch_taper)
    groups = scan_groups(scan.positions, model.config.gridsize)
    for batch, member_pos in iter_predictions(model, scan, groups, batch_size=cfg.batch_size,
                                              precision=cfg.precision, device=device):
        stitcher.add(batch.reshape(-1, n, n), frame(member_pos.reshape(-1, 2)) + shift)
    obj = stitcher.result()[0]
    k = tf_helper.refine_iterations() if refine_iterations is None else int(refine_iterations)
    if k > 0 and not (flip_x or flip_y or transpose):
        import dataclasses

        from ptychopinn.config import RefineConfig
        from ptychopinn.refine import refine_onto

        native = dataclasses.replace(scan, positions=scan.positions + shift, obj=None, patches=None)
        obj = refine_onto(native, obj, origin, RefineConfig(iterations=k))
    return obj


def run_cdi_example(train_data: RawData | ScanData | str | os.PathLike[str],
                    test_data: RawData | ScanData | str | os.PathLike[str] | None,
                    config: TrainingConfig, flip_x: bool = False, flip_y: bool = False, transpose: bool = False,
                    M: int = 20, do_stitching: bool = False,  # noqa: N803 - reference argument name
                    ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Train on ``train_data`` (validate on ``test_data``) and optionally reconstruct ``test_data``.

    Returns ``(amplitude, phase, results)``: ``amplitude``/``phase`` are ``[H, W]`` float32 (radians)
    when ``do_stitching`` (see :func:`reassemble_cdi_image`), else None (the reference default).
    ``results``: ``history`` ({'train_loss': [...], 'val_loss': [...]}), ``model`` (the trained core
    ``PtychoPINN``; also ``model_instance``), ``model_wrapper`` (an :class:`InferenceModel`),
    ``backend`` ('pytorch'), ``intensity_scale``, ``epochs_completed``, ``train_seconds``, ``output_dir``,
    ``archive``, ``n_train_points`` and, when stitched, ``reconstructed_obj`` ([H, W] complex64).
    """
    results = train_cdi_model(train_data, test_data, config)
    if not do_stitching:
        return None, None, results
    if test_data is None:
        raise ConfigError("run_cdi_example(do_stitching=True): expected test_data to reconstruct, found None; "
                          "pass test data or do_stitching=False")
    obj = reassemble_cdi_image(_as_raw(test_data), results["model"], flip_x, flip_y, transpose, M)
    results["reconstructed_obj"] = obj
    return np.abs(obj).astype(np.float32), np.angle(obj).astype(np.float32), results


def _as_raw(data: RawData | ScanData | str | os.PathLike[str]) -> RawData | ScanData:
    if isinstance(data, (RawData, ScanData)):
        return data
    return RawData.from_file(data)


# ------------------------------------------------------------------------------------ loading
def load_inference_bundle(model_dir: str | os.PathLike[str]) -> tuple[InferenceModel, dict[str, Any]]:
    """Load a model for inference and return ``(model, cfg)``.

    ``model_dir``: a directory holding ``wts.h5.zip`` (what training writes), a directory holding the
    *extracted members* of one (what ptychodus makes of a model saved under another name, e.g.
    ``model.zip``), or the archive file itself. Side effect: the model's parameters (``N``, ``gridsize``,
    ``intensity_scale``, ``nphotons``, the model flags) are written into ``ptycho.params.cfg``, overriding
    earlier values. ``cfg`` is a copy of that dict. The model is remembered for ``model_manager.save``.
    """
    from ptychopinn.models.persist import load_model

    loaded = load_model(Path(model_dir))
    legacy = _legacy_model_params(loaded.model)
    nphotons = loaded.metadata.get("nphotons", loaded.training.get("nphotons"))
    if isinstance(nphotons, (int, float)):
        legacy["nphotons"] = float(nphotons)
    params.cfg.update(legacy)
    _state["model"] = RememberedModel(model=loaded.model, training=dict(loaded.training),
                                      metadata=dict(loaded.metadata), source=str(loaded.path))
    return InferenceModel(loaded.model), dict(params.cfg)


# ------------------------------------------------------------------------------------ outputs
def _json_ready(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_ready(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def save_outputs(amplitude: np.ndarray | None, phase: np.ndarray | None, results: dict[str, Any] | None,
                 output_prefix: str | os.PathLike[str]) -> dict[str, Path]:
    """Write what there is into the directory ``output_prefix`` (created) and return the written paths.

    ``reconstructed_amplitude.png`` / ``reconstructed_phase.png`` for a 2-D ``amplitude`` / ``phase``
    (radians), each skipped when None; ``history.json`` with ``results['history']`` (per-epoch losses)
    when present.
    """
    out = Path(output_prefix)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if amplitude is not None or phase is not None:
        from ptychopinn.plots import save_amplitude_png, save_phase_png

        if amplitude is not None:
            amp = np.squeeze(np.asarray(amplitude))
            if amp.ndim != 2:
                raise DataFormatError(f"save_outputs: expected a 2-D amplitude image, found shape {amp.shape}; "
                                      f"pass the stitched amplitude")
            written["amplitude"] = save_amplitude_png(amp, out / "reconstructed_amplitude.png",
                                                      title="Reconstructed amplitude")
        if phase is not None:
            ph = np.squeeze(np.asarray(phase, dtype=np.float64))
            if ph.ndim != 2:
                raise DataFormatError(f"save_outputs: expected a 2-D phase image, found shape {ph.shape}; "
                                      f"pass the stitched phase")
            # The plot helper takes a complex object; exp(i*phase) has exactly this phase.
            written["phase"] = save_phase_png(np.exp(1j * ph), out / "reconstructed_phase.png",
                                              title="Reconstructed phase")
    history = (results or {}).get("history")
    if history:
        path = out / "history.json"
        path.write_text(json.dumps(_json_ready(history), indent=2, sort_keys=True), encoding="utf-8")
        written["history"] = path
    return written
