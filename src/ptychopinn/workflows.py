"""The few high-level functions that the command line, the compatibility packages and users call:
train a model and write its archive, reconstruct a scan, evaluate a reconstruction, run the demo.

Each takes explicit arguments (no global state) and returns a small result object naming what it
wrote. Heavy modules (torch, Lightning, matplotlib) are imported inside the functions.

Output folders (:mod:`ptychopinn.io.outputs`): before anything is written, every output a function will
write (``*_outputs()`` below name them) is checked against the input files it was given (an input is never
overwritten); one run per folder (lock); and the files of :func:`reconstruct_scan`,
:func:`refine_reconstruction` and :func:`evaluate_reconstruction` appear only when the run succeeds.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, RefineConfig, TrainingConfig
from ptychopinn.config_fields import is_int
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.io.outputs import output_run
from ptychopinn.io.probe import probe_is_estimated
from ptychopinn.io.product_h5 import save_scan_product
from ptychopinn.io.reconstruction import PIXEL_CONVENTION, load_reconstruction, save_reconstruction_npz

__all__ = ["PIXEL_CONVENTION", "evaluate_outputs", "evaluate_reconstruction", "load_reconstruction",
           "output_run", "reconstruct_outputs", "reconstruct_scan", "refine_outputs", "refine_reconstruction",
           "save_reconstruction_npz", "train_model", "train_outputs", "train_synthetic"]

RECONSTRUCTION_NAME = "reconstruction.npz"
NETWORK_RECONSTRUCTION_NAME = "network_reconstruction.npz"
PRODUCT_NAME = "reconstruction.h5"
MISFIT_NAME = "misfit.png"
PROBE_NAME = "probe.png"


def train_outputs() -> tuple[str, ...]:
    """What :func:`train_model` writes into its output folder (folders end in ``/``)."""
    from ptychopinn.io.archive_container import ARCHIVE_NAME
    from ptychopinn.io.outputs import LOCK_NAME

    return (LOCK_NAME, ARCHIVE_NAME, "checkpoints/", "logs/", "mlruns/")


def reconstruct_outputs(*, write_product: bool = False, refine: bool = False) -> tuple[str, ...]:
    """What :func:`reconstruct_scan` writes with these settings."""
    from ptychopinn.io.outputs import LOCK_NAME
    from ptychopinn.pictures import OBJECT_IMAGE_NAMES

    names = [LOCK_NAME, RECONSTRUCTION_NAME, *OBJECT_IMAGE_NAMES, PROBE_NAME]
    if refine:
        names += [NETWORK_RECONSTRUCTION_NAME, MISFIT_NAME]
    return (*names, *([PRODUCT_NAME] if write_product else []))


def refine_outputs(*, write_product: bool = False) -> tuple[str, ...]:
    """What :func:`refine_reconstruction` writes with these settings."""
    from ptychopinn.io.outputs import LOCK_NAME
    from ptychopinn.pictures import OBJECT_IMAGE_NAMES

    return (LOCK_NAME, RECONSTRUCTION_NAME, *OBJECT_IMAGE_NAMES, MISFIT_NAME, PROBE_NAME,
            *([PRODUCT_NAME] if write_product else []))


def evaluate_outputs() -> tuple[str, ...]:
    """What :func:`evaluate_reconstruction` writes."""
    from ptychopinn.io.outputs import LOCK_NAME

    return (LOCK_NAME, "metrics.json", "comparison.png", "frc.png")


def _path_of(scan: ScanData | str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """The file behind a scan argument (None for a ScanData in memory)."""
    return None if scan is None or isinstance(scan, ScanData) else scan


def _as_scan(scan: ScanData | str | os.PathLike[str], units: str) -> ScanData:
    if isinstance(scan, ScanData):
        return scan
    from ptychopinn.io.registry import load_scan

    # any registered format; stacks above the mmap threshold stay on disk
    return load_scan(scan, units=units)


def _save_probe_picture(stage: Path, probe: Any, scan: ScanData, what: str) -> None:
    """``probe.png`` (amplitude and phase) of a probe the run estimated or refined."""
    from ptychopinn.pictures import save_probe_png

    save_probe_png(np.asarray(probe), stage / PROBE_NAME, pixel_size_m=scan.pixel_size_m, title=f"{what} probe")


@dataclass
class TrainOutcome:
    """What :func:`train_model` produced."""

    archive: Path
    output_dir: Path
    history: dict[str, list[float]]
    loss_plot: Path | None
    metrics_csv: Path | None
    last_checkpoint: Path | None
    epochs_completed: int
    seconds: float
    model: Any = field(repr=False, default=None)


def train_model(
    train: ScanData | str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str],
    test: ScanData | str | os.PathLike[str] | None = None,
    model: ModelConfig | None = None,
    training: TrainingConfig | None = None,
    execution: ExecutionConfig | None = None,
    resume: bool = False,
    units: str = "auto",
    provenance: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Train on a scan (``test`` becomes the validation set) and write ``output_dir/wts.h5.zip``.

    ``model.N`` is taken from the data when it differs from the default and was not set
    explicitly by the caller (pass a ModelConfig with the right N to be strict). ``provenance``: JSON-ready
    entries added to the archive's metadata (where the training data came from).
    Returns a :class:`TrainOutcome` with the archive path, per-epoch history and written files.
    """
    from ptychopinn.io.archive import ARCHIVE_NAME
    from ptychopinn.io.outputs import check_outputs_apart
    from ptychopinn.models.persist import save_model
    from ptychopinn.training.run import train as _train
    from ptychopinn.training.trainer import remove_stale_temp_files, with_filename

    t0 = time.perf_counter()
    out = Path(output_dir)
    check_outputs_apart(out, train_outputs(), [_path_of(train), _path_of(test)])
    out.mkdir(parents=True, exist_ok=True)
    train_scan = _as_scan(train, units)
    val_scan = _as_scan(test, units) if test is not None else None
    if val_scan is not None and val_scan.N != train_scan.N:
        raise DataFormatError(f"test scan has {val_scan.N}x{val_scan.N} patterns but the training scan has "
                              f"{train_scan.N}x{train_scan.N}; use scans recorded with the same detector size")
    model = model or ModelConfig(N=train_scan.N)
    if model.N != train_scan.N:
        model = model.replace(N=train_scan.N)
    training = training or TrainingConfig()
    execution = execution or ExecutionConfig()
    # A temporary archive left by a run killed while saving (the final name is never partial).
    remove_stale_temp_files(out, ARCHIVE_NAME)
    result = _train(train_scan, model=model, training=training, execution=execution, output_dir=out,
                    val_scan=val_scan, resume=resume)
    metadata = {
        "history": result.history,
        "input_scale": result.input_scale,
        "intensity_scale": result.intensity_scale,
        "nphotons": result.nphotons,
        "nphotons_source": result.nphotons_source,
        "epochs_completed": result.epochs_completed,
        "train_points": int(train_scan.n_points),
        # pixel size, energy and distance of the training data when known: a model only fits data of the
        # same geometry, so its archive says which
        **train_scan.physical(),
        **(provenance or {}),
    }
    from lightning.pytorch.utilities import rank_zero_only

    archive = out / ARCHIVE_NAME
    try:
        # under DDP every rank returns here with identical weights; only rank 0 writes the archive
        if getattr(rank_zero_only, "rank", 0) == 0:
            archive = save_model(out, result.model, training=training.to_dict(), metadata=metadata)
    except OSError as exc:  # e.g. disk full while writing: name the file in the message
        named = with_filename(exc, out / ARCHIVE_NAME)
        if named is exc:
            raise
        raise named from exc
    return TrainOutcome(archive=archive, output_dir=out, history=result.history, loss_plot=result.loss_plot,
                        metrics_csv=result.metrics_csv, last_checkpoint=result.last_checkpoint,
                        epochs_completed=result.epochs_completed, seconds=time.perf_counter() - t0,
                        model=result.model)


def train_synthetic(
    scan: ScanData | str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str],
    kinds: tuple[str, ...] | str | None = None,
    objects: int | None = None,
    test: ScanData | str | os.PathLike[str] | None = None,
    model: ModelConfig | None = None,
    training: TrainingConfig | None = None,
    execution: ExecutionConfig | None = None,
    resume: bool = False,
    units: str = "auto",
) -> TrainOutcome:
    """:func:`train_model` on ``objects`` generated objects of ``kinds`` seen through ``scan``'s probe, positions,
    N and mean counts per pattern (:func:`ptychopinn.simulate.synthetic.synthetic_training_scan`, seeded by
    ``training.seed``; None: its ``SYNTHETIC_KINDS``, ``SYNTHETIC_OBJECTS``), so that a network for the scan's
    geometry exists before a sample is measured. The scan's patterns are not trained on (only their dose is
    read); ``test`` is an optional validation scan. The archive's metadata records ``synthetic``.
    """
    from ptychopinn.io.outputs import check_outputs_apart
    from ptychopinn.simulate.synthetic import SYNTHETIC_KINDS, SYNTHETIC_OBJECTS, synthetic_training_scan

    check_outputs_apart(Path(output_dir), train_outputs(), [_path_of(scan), _path_of(test)])
    seed = (training or TrainingConfig()).seed
    synthetic = synthetic_training_scan(_as_scan(scan, units), kinds=kinds or SYNTHETIC_KINDS,
                                        objects=SYNTHETIC_OBJECTS if objects is None else objects, seed=seed,
                                        probe_scale=(model or ModelConfig()).probe_scale)
    return train_model(synthetic, output_dir=output_dir, test=test, model=model, training=training,
                       execution=execution, resume=resume, units=units,
                       provenance={"synthetic": synthetic.metadata["synthetic"]})


@dataclass
class ReconstructOutcome:
    """What :func:`reconstruct_scan` produced."""

    npz: Path
    amplitude_png: Path
    phase_png: Path
    product_h5: Path | None
    n_patterns: int
    shape: tuple[int, int]
    seconds: float
    reconstruction: Any = field(repr=False, default=None)
    refined: Any = field(repr=False, default=None)
    probe_png: Path | None = None
    adapted: Any = field(repr=False, default=None)


def reconstruct_scan(
    model_path: str | os.PathLike[str],
    scan: ScanData | str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str],
    inference: InferenceConfig | None = None,
    units: str = "auto",
    write_product: bool = False,
    progress: bool = False,
    refine: Any = None,
    adapt_epochs: int = 0,
    adapt_learning_rate: float | None = None,
) -> ReconstructOutcome:
    """Reconstruct a scan with a trained model archive and write the results to ``output_dir``.

    Writes ``reconstruction.npz`` (see :func:`save_reconstruction_npz`), ``amplitude.png``,
    ``phase.png`` and, with ``write_product``, a ptychodus product ``reconstruction.h5``. The canvas
    has the scan's object pixel grid (the ground-truth object's shape when the file has one).
    With ``refine`` (a :class:`~ptychopinn.config.RefineConfig`) the network's image is then refined on the
    physics (:func:`refine_reconstruction`'s outputs replace the network's) and kept as
    ``network_reconstruction.npz``. The files appear together when the run succeeds; a refused or interrupted
    run leaves ``output_dir`` as it was (:mod:`ptychopinn.io.outputs`).
    With ``adapt_epochs`` K > 0 the network is first fine-tuned on this scan with the physics loss for K epochs
    (:func:`ptychopinn.training.adapt.adapt_model`, at ``adapt_learning_rate``, default
    :data:`~ptychopinn.training.adapt.ADAPT_LEARNING_RATE`; the archive is not changed) and the adapted network
    predicts; ``seconds`` includes the adaptation. 0 (default) predicts with the archive's network as it is.
    """
    from ptychopinn.inference.predict import reconstruct
    from ptychopinn.io.outputs import check_outputs_apart
    from ptychopinn.models.persist import load_model
    from ptychopinn.pictures import save_object_images

    t0 = time.perf_counter()
    if not is_int(adapt_epochs) or adapt_epochs < 0:
        raise ConfigError(f"adapt_epochs: expected an integer >= 0, found {adapt_epochs!r}; 0 predicts without "
                          "adapting, e.g. 5 fine-tunes the network on the scan first")
    out = Path(output_dir)
    names = reconstruct_outputs(write_product=write_product, refine=refine is not None)
    inputs = [model_path, _path_of(scan)]
    check_outputs_apart(out, names, inputs)
    loaded = load_model(model_path)
    scan_data = _as_scan(scan, units)
    cfg = inference or InferenceConfig()
    object_shape = tuple(scan_data.obj.shape) if scan_data.obj is not None else None
    extra: dict[str, Any] = {"model": str(loaded.path), **scan_data.physical()}
    with output_run(out, names, inputs, holder="ptychopinn infer", last=RECONSTRUCTION_NAME) as stage:
        adapted = None
        if adapt_epochs > 0:
            from ptychopinn.training.adapt import ADAPT_LEARNING_RATE, adapt_model

            rate = ADAPT_LEARNING_RATE if adapt_learning_rate is None else adapt_learning_rate
            adapted = adapt_model(loaded.model, scan_data, epochs=adapt_epochs, learning_rate=rate,
                                  accelerator=cfg.accelerator, progress=progress)
            extra.update(adapted.metadata())
        # the adapted network predicts with the input scale it was adapted with
        network = loaded.model if adapted is None else adapted.model
        input_scale = None if adapted is None else adapted.input_scale
        # the device comes from cfg.accelerator through runtime.resolve_device (the one mapping)
        # With refinement the network's image (network_reconstruction.npz) is the one `--refine 0` writes, but
        # refinement starts from the same windows without phase synchronisation under stitch_sync 'auto': a
        # synchronised start ends worse (benchmark, 20 iterations: phase SSIM 0.952 from the synchronised
        # image, 0.971 from the unsynchronised one, 0.962 from a flat start).
        plain_start = refine is not None and cfg.stitch_sync == "auto"
        recon = reconstruct(network, scan_data, cfg, object_shape=object_shape, progress=progress,
                            keep_unsynchronised=plain_start, input_scale=input_scale)
        extra["stitch_sync"] = recon.sync
        recon, extra["transmission"] = _in_transmission_units(recon)
        if probe_is_estimated(scan_data.metadata):
            _save_probe_picture(stage, scan_data.probe, scan_data, "Estimated")
        if refine is not None:
            from ptychopinn.refine import refine_scan

            start = recon.obj if recon.unsynchronised is None else recon.unsynchronised
            save_reconstruction_npz(stage / NETWORK_RECONSTRUCTION_NAME, recon,
                                    extra={**extra, "refinement_start": "this image" if start is recon.obj else
                                           "the same windows without phase synchronisation"})
            result = refine_scan(scan_data, refine, start=start, start_origin=recon.origin, progress=progress)
            done = _write_refined(result, scan_data, stage, out, write_product,
                                  source=str(out / NETWORK_RECONSTRUCTION_NAME), seconds=0.0, config=refine)
            return ReconstructOutcome(npz=done.npz, amplitude_png=done.amplitude_png, phase_png=done.phase_png,
                                      product_h5=done.product_h5, n_patterns=recon.n_patterns,
                                      shape=tuple(result.obj.shape), seconds=time.perf_counter() - t0,
                                      reconstruction=recon, refined=result, probe_png=done.probe_png,
                                      adapted=adapted)
        save_reconstruction_npz(stage / RECONSTRUCTION_NAME, recon, extra=extra)
        save_object_images(recon.obj, stage, coverage=recon.coverage, origin_xy=recon.origin,
                           pixel_size_m=scan_data.pixel_size_m, title="Reconstructed")
        product = None
        if write_product:
            save_scan_product(stage / PRODUCT_NAME, recon.obj, recon.origin, recon.positions, scan_data.probe,
                              scan_data, "ptychopinn")
            product = out / PRODUCT_NAME
    return ReconstructOutcome(npz=out / RECONSTRUCTION_NAME, amplitude_png=out / "amplitude.png",
                              phase_png=out / "phase.png", product_h5=product, n_patterns=recon.n_patterns,
                              shape=tuple(recon.obj.shape), seconds=time.perf_counter() - t0, reconstruction=recon,
                              probe_png=out / PROBE_NAME if probe_is_estimated(scan_data.metadata) else None,
                              adapted=adapted)


def _in_transmission_units(recon: Any) -> tuple[Any, float]:
    """The network's image divided by its free-space level (:func:`ptychopinn.data.normalize.transmission_level`),
    the rule refinement results follow, so that both images of ``infer`` are about 1 where the sample is empty;
    and the level (the image's amplitude in the network's units, about ``2 / probe_scale`` for a sample that
    transmits everywhere)."""
    import dataclasses

    from ptychopinn.data.normalize import transmission_level

    level = transmission_level(recon.obj, recon.coverage)
    return dataclasses.replace(recon, obj=(recon.obj / np.float32(level)).astype(np.complex64)), level


@dataclass
class RefineOutcome:
    """What :func:`refine_reconstruction` produced."""

    npz: Path
    amplitude_png: Path
    phase_png: Path
    misfit_png: Path
    product_h5: Path | None
    iterations: int
    seconds: float
    result: Any = field(repr=False, default=None)
    probe_png: Path | None = None


def refine_reconstruction(
    scan: ScanData | str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str],
    start: str | os.PathLike[str] | None = None,
    refine: Any = None,
    units: str = "auto",
    write_product: bool = False,
    progress: bool = False,
) -> RefineOutcome:
    """Refine a reconstruction of ``scan`` on the physics and write the results to ``output_dir``.

    Args:
        scan: scan (or its path); ground truth in it is never used.
        output_dir: where ``reconstruction.npz`` (with the refined ``probe`` and ``misfit`` history),
            ``amplitude.png``, ``phase.png``, ``misfit.png`` and optionally ``reconstruction.h5`` go, together
            and only when the refinement succeeds.
        start: a reconstruction NPZ to start from (e.g. ``ptychopinn infer`` output; never the one this run
            writes); None = flat object.
        refine: a :class:`~ptychopinn.config.RefineConfig` (default settings when None).
        units, write_product, progress: as :func:`reconstruct_scan`.
    """
    from ptychopinn.io.outputs import check_outputs_apart
    from ptychopinn.refine import refine_scan

    t0 = time.perf_counter()
    cfg = refine or RefineConfig()
    out = Path(output_dir)
    names = refine_outputs(write_product=write_product)
    inputs = [_path_of(scan), start]
    check_outputs_apart(out, names, inputs)
    scan_data = _as_scan(scan, units)
    obj, origin = None, (0.0, 0.0)
    if start is not None:
        obj, _, origin = load_reconstruction(start)
    with output_run(out, names, inputs, holder="ptychopinn refine", last=RECONSTRUCTION_NAME) as stage:
        result = refine_scan(scan_data, cfg, start=obj, start_origin=origin, progress=progress)
        return _write_refined(result, scan_data, stage, out, write_product,
                              source="flat" if start is None else str(start), seconds=time.perf_counter() - t0,
                              config=cfg)


def _write_refined(result: Any, scan: ScanData, stage: Path, out: Path, write_product: bool, *, source: str,
                   seconds: float, config: RefineConfig) -> RefineOutcome:
    """Write a refinement's files into ``stage``; the outcome names them where they land: in ``out``."""
    from ptychopinn.pictures import save_object_images
    from ptychopinn.plots import save_loss_curves

    misfit = np.asarray([h["misfit"] for h in result.history], dtype=np.float64)
    logging.getLogger("ptychopinn").info(
        "refinement: engine %s, %s misfit, %d iterations in %.1f s, misfit %.4g -> %.4g, stopped: %s",
        result.engine, result.noise, result.iterations, result.seconds, misfit[0], misfit[-1], result.stop_reason)
    save_reconstruction_npz(
        stage / RECONSTRUCTION_NAME, result,
        extra={"n_patterns": int(scan.n_points), "refined_from": source, "iterations": result.iterations,
               "refine_seconds": result.seconds, "start_scale": result.scale, "refine_engine": result.engine,
               "refine_noise": result.noise, "refine_alpha": result.alpha, "refine_stop_reason": result.stop_reason,
               "transmission": result.transmission, "refine_notes": result.notes,
               # the misfit history is only comparable between runs with the same settings
               "refine_config": config.to_dict(), **scan.physical()},
        arrays={"probe": result.probe, "misfit": misfit, "positions_start": scan.positions,
                **({} if result.probe_modes is None else {"probe_modes": result.probe_modes})})
    save_object_images(result.obj, stage, coverage=result.coverage, origin_xy=tuple(result.origin),
                       pixel_size_m=scan.pixel_size_m, title="Refined")
    save_loss_curves({"misfit / total counts": misfit.tolist()}, stage / MISFIT_NAME,
                     title="Refinement misfit", xlabel="iteration", ylabel="misfit")
    refined_probe = result.probe_refined
    probe_png = None
    if refined_probe or probe_is_estimated(scan.metadata):
        _save_probe_picture(stage, result.probe, scan, "Refined" if refined_probe else "Estimated")
        probe_png = out / PROBE_NAME
    product = None
    if write_product:
        probe = result.probe if result.probe_modes is None else result.probe_modes
        save_scan_product(stage / PRODUCT_NAME, result.obj, result.origin, result.positions, probe, scan,
                          "ptychopinn refine")
        product = out / PRODUCT_NAME
    return RefineOutcome(npz=out / RECONSTRUCTION_NAME, amplitude_png=out / "amplitude.png",
                         phase_png=out / "phase.png", misfit_png=out / MISFIT_NAME, product_h5=product,
                         iterations=result.iterations, seconds=seconds, result=result, probe_png=probe_png)


def evaluate_reconstruction(
    reconstruction: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str],
    remove_ramp: bool = False,
) -> dict[str, Any]:
    """Compare a reconstruction NPZ with the ground truth and write ``metrics.json``,
    ``comparison.png`` and ``frc.png`` to ``output_dir`` (together, when it succeeds). Returns the metrics dict.

    The reconstruction canvas is placed on the truth's pixel grid using its recorded origin;
    metrics are computed over the covered (scanned) region only.
    """
    from ptychopinn.io.outputs import check_outputs_apart
    from ptychopinn.io.registry import load_object
    from ptychopinn.metrics import align_for_comparison, evaluate, on_truth_grid
    from ptychopinn.plots import save_comparison_figure, save_frc_figure

    out = Path(output_dir)
    names = evaluate_outputs()
    inputs = [reconstruction, truth]
    check_outputs_apart(out, names, inputs)
    obj, coverage, origin = load_reconstruction(reconstruction)
    gt = load_object(truth)
    recon_full, mask = on_truth_grid(obj, coverage, origin, gt.shape)
    metrics = evaluate(recon_full, gt, mask=mask, remove_ramp=remove_ramp)
    r_crop, t_crop, info = align_for_comparison(recon_full, gt, mask=mask, remove_ramp=remove_ramp)
    (r0, _), (c0, _) = info.region
    with output_run(out, names, inputs, holder="ptychopinn evaluate", last="metrics.json") as stage:
        _write_json(stage / "metrics.json", metrics)
        save_comparison_figure(r_crop, t_crop, stage / "comparison.png", metrics=metrics, mask=info.mask,
                               origin_xy=(c0, r0))
        save_frc_figure(metrics, stage / "frc.png")
    return metrics


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    import json

    from ptychopinn.io.atomic import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    return path
