"""The object API that ptychodus's PtychoPINN-Torch plugin drives: configs, data, model, trainer, inference.

Thin adapters over :mod:`ptychopinn`: data become a core :class:`~ptychopinn.data.scan.ScanData` (patterns are
detector counts; the square root is taken), training is the core's training run
(:func:`ptychopinn.training.run.prepare_training`) with the reference Lightning module, and reconstruction is
:func:`ptychopinn.inference.predict.reconstruct`.

Typical use (what the plugin does)::

    cm = ConfigManager(data_config=d, model_config=m, training_config=t, inference_config=i)
    loader = PtychoDataLoader(data_dir=Path(dir), config_manager=cm,
                              data_format=DataloaderFormats('lightning_only_module'), output_dir=Path(out))
    pm = PtychoModel._new_model(model=PtychoPINN_Lightning, config_manager=cm)
    trainer = Trainer._from_lightning(model=pm, dataloader=loader, orchestration='lightning', config_manager=cm)
    trainer.train(orchestration='lightning', experiment_name='')
    ckpt = find_best_checkpoint(loader.output_dir)          # <out>/run_<timestamp>/checkpoints/*.ckpt

Nothing is written to the current working directory.
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptycho_torch.config_params import (
    DataConfig,
    DatagenConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
    config_from_dict,
    resolve_hardware,
    to_core_configs,
)
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError

if TYPE_CHECKING:
    from ptychopinn.training.run import TrainingRun

__all__ = ["ConfigManager", "DataloaderFormats", "InferenceEngine", "PtychoDataLoader", "PtychoModel", "Trainer"]

logger = logging.getLogger(__name__)


class ConfigManager:
    """The five reference configs of one run (instances or dicts; dicts are converted and validated)."""

    def __init__(self, data_config: Any = None, model_config: Any = None, training_config: Any = None,
                 inference_config: Any = None, datagen_config: Any = None) -> None:
        self.data_config: DataConfig = config_from_dict("data", data_config if data_config is not None else {})
        self.model_config: ModelConfig = config_from_dict("model", model_config if model_config is not None else {})
        self.training_config: TrainingConfig = config_from_dict(
            "training", training_config if training_config is not None else {})
        self.inference_config: InferenceConfig = config_from_dict(
            "inference", inference_config if inference_config is not None else {})
        self.datagen_config: DatagenConfig = config_from_dict(
            "datagen", datagen_config if datagen_config is not None else {})
        for cfg in (self.data_config, self.model_config, self.training_config, self.inference_config):
            cfg.validate()

    @classmethod
    def from_loaded_model(cls, ptycho_model: PtychoModel) -> ConfigManager:
        """The configs of a model loaded from a checkpoint."""
        return cls(data_config=ptycho_model.data_config, model_config=ptycho_model.model_config,
                   training_config=ptycho_model.training_config, inference_config=ptycho_model.inference_config)

    def core_configs(self, n_points: int | None = None) -> dict[str, Any]:
        """The core ``ptychopinn.config`` objects (see :func:`ptycho_torch.config_params.to_core_configs`)."""
        return to_core_configs(self.data_config, self.model_config, self.training_config, self.inference_config,
                               n_points=n_points)

    def validate_arch_compatibility(self, ptycho_model: PtychoModel) -> None:
        """ConfigError when these configs describe a different network than the one in ``ptycho_model``."""
        module = ptycho_model.model
        if module is None:
            raise ConfigError("validate_arch_compatibility: expected a PtychoModel with a built module, found "
                              "model=None; load it with PtychoPINN_Lightning.load_from_checkpoint")
        core = module.model.config
        mine = self.core_configs()["model"]
        for name in ("N", "gridsize", "n_filters_scale", "object_big", "probe_big", "amp_activation",
                     "cbam_encoder", "model_type"):
            if getattr(core, name) != getattr(mine, name):
                raise ConfigError(f"architecture mismatch in {name}: the model has {getattr(core, name)!r}, the "
                                  f"configs say {getattr(mine, name)!r}; use the configs saved with the checkpoint")


class DataloaderFormats(enum.Enum):
    """Data-loader flavours of the reference; all build the same in-memory core data here."""

    LIGHTNING_MODULE = "lightning_module"
    LIGHTNING_ONLY_MODULE = "lightning_only_module"


def _probe_2d(probe: Any, where: str) -> np.ndarray:
    p = np.asarray(probe)
    if p.ndim == 3:
        if p.shape[0] > 1:
            energies = (np.abs(p) ** 2).sum(axis=(1, 2))
            warnings.warn(f"{where}: {p.shape[0]} probe modes given; ptychopinn uses one coherent mode, the "
                          f"strongest (mode {int(np.argmax(energies))})", RuntimeWarning, stacklevel=3)
            p = p[int(np.argmax(energies))]
        else:
            p = p[0]
    if p.ndim != 2 or not np.iscomplexobj(p):
        raise DataFormatError(f"{where}: expected a complex probe (P, N, N) or (N, N), found shape {p.shape} "
                              f"dtype {p.dtype}; pass the probe array")
    return p.astype(np.complex64)


def _in_bounds(positions: np.ndarray, x_bounds: Any, y_bounds: Any) -> np.ndarray:
    """Boolean mask of the (x, y) positions inside the fractional bounds of the coordinate range."""
    keep = np.ones(len(positions), bool)
    for col, (lo, hi) in ((0, x_bounds), (1, y_bounds)):
        c = positions[:, col]
        cmin, span = float(c.min()), float(c.max() - c.min())
        keep &= (c >= cmin + float(lo) * span - 1e-9) & (c <= cmin + float(hi) * span + 1e-9)
    return keep


class PtychoDataLoader:
    """Scan data for training (every ``*.npz`` in ``data_dir``) or for inference (``from_np``).

    Attributes:
        scan: the core :class:`ScanData` (amplitude = sqrt(counts), positions (x, y) object pixels).
        output_dir: ``<output_dir>/run_<YYYYmmdd_HHMMSS>`` (created) for training, None for inference.
        files: the NPZ files read (training only).
    """

    def __init__(self, data_dir: str | Path, config_manager: ConfigManager,
                 data_format: DataloaderFormats | str = DataloaderFormats.LIGHTNING_ONLY_MODULE,
                 output_dir: str | Path | None = None) -> None:
        from ptychopinn.io.npz import load_npz

        DataloaderFormats(data_format.value if isinstance(data_format, DataloaderFormats) else data_format)
        self.config_manager = config_manager
        d = Path(data_dir)
        if not d.is_dir():
            raise FileNotFoundError(f"training data directory not found: {d}")
        self.files = sorted(p for p in d.glob("*.npz") if p.is_file())
        if not self.files:
            raise FileNotFoundError(f"no *.npz training files in {d}; export training data there first")
        dc = config_manager.data_config
        scans = [load_npz(p, units="intensity") for p in self.files]  # ptychodus exports detector counts
        for p, s in zip(self.files, scans, strict=True):
            _check_n(dc, s.N, str(p))
        kept = []
        for p, s in zip(self.files, scans, strict=True):
            mask = _in_bounds(s.positions, dc.x_bounds, dc.y_bounds)
            if int(mask.sum()) < max(dc.C, 2):
                raise DataFormatError(f"{p}: only {int(mask.sum())} scan points lie inside x_bounds={dc.x_bounds}, "
                                      f"y_bounds={dc.y_bounds}; widen the bounds")
            kept.append((s, mask))
        self.scan = _combine(kept, [str(p) for p in self.files])
        self.output_dir: Path | None = None
        if output_dir is not None:
            stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
            run = Path(output_dir) / f"run_{stamp}"
            k = 1
            while run.exists():
                run = Path(output_dir) / f"run_{stamp}_{k}"
                k += 1
            run.mkdir(parents=True)
            self.output_dir = run

    @classmethod
    def from_np(cls, diff_patterns: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                config_manager: ConfigManager) -> PtychoDataLoader:
        """An inference loader from arrays: ``diff_patterns`` ``(M, N, N)`` counts (any real dtype),
        ``probe`` ``(P, N, N)`` or ``(N, N)`` complex, ``positions`` ``(M, 2)`` **(y, x)** object pixels."""
        diff = np.asarray(diff_patterns)
        pos = np.asarray(positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) != len(diff):
            raise DataFormatError(f"from_np: expected positions (M, 2) = (y, x) with M = {len(diff)}, found shape "
                                  f"{pos.shape}; stack (y_px, x_px) columns")
        if diff.ndim != 3:
            raise DataFormatError(f"from_np: expected diff_patterns (M, N, N), found shape {diff.shape}")
        _check_n(config_manager.data_config, diff.shape[-1], "from_np diff_patterns")
        obj = cls.__new__(cls)
        obj.config_manager = config_manager
        obj.files = []
        obj.output_dir = None
        obj.scan = ScanData.from_arrays(diff.astype(np.float32), pos[:, ::-1].copy(),
                                        _probe_2d(probe, "from_np"), units="intensity")
        return obj


def _check_n(dc: DataConfig, n: int, where: str) -> None:
    if dc.N != n:
        raise ConfigError(f"DataConfig.N (model_size) is {dc.N} but {where} has {n}x{n} patterns; "
                          f"set model_size to {n}")


def _combine(kept: list[tuple[ScanData, np.ndarray]], names: list[str]) -> ScanData:
    """One training scan from the in-bounds points of several files (same probe required); each file's
    positions are shifted apart so that no group mixes patterns of two files."""
    if len(kept) == 1:
        s, m = kept[0]
        return ScanData.from_arrays(s.diffraction[m], s.positions[m], s.probe, units="amplitude")
    probe0 = kept[0][0].probe
    diffs, poss = [], []
    offset = 0.0
    for (s, m), name in zip(kept, names, strict=True):
        if s.probe.shape != probe0.shape or not np.allclose(s.probe, probe0, rtol=1e-4, atol=1e-6 * np.abs(
                probe0).max()):
            raise DataFormatError(f"{name}: its probe differs from that of {names[0]}; ptychopinn trains one "
                                  f"probe per model, so put files with different probes in separate directories")
        pos = s.positions[m].copy()
        pos[:, 0] += offset - pos[:, 0].min()
        offset = float(pos[:, 0].max()) + 10.0 * s.N
        diffs.append(s.diffraction[m])
        poss.append(pos)
    return ScanData.from_arrays(np.concatenate(diffs), np.concatenate(poss), probe0, units="amplitude")


class PtychoModel:
    """A model and its four configs; ``model`` is the :class:`PtychoPINN_Lightning` (None until data are bound
    by :meth:`Trainer._from_lightning` or a checkpoint is loaded)."""

    def __init__(self, model_config: Any = None, data_config: Any = None, training_config: Any = None,
                 inference_config: Any = None) -> None:
        self.model_config = config_from_dict("model", model_config if model_config is not None else {})
        self.data_config = config_from_dict("data", data_config if data_config is not None else {})
        self.training_config = config_from_dict("training", training_config if training_config is not None else {})
        self.inference_config = config_from_dict("inference",
                                                 inference_config if inference_config is not None else {})
        self.model: Any = None
        self.module_class: type | None = None

    @classmethod
    def _new_model(cls, model: type, config_manager: ConfigManager) -> PtychoModel:
        """A fresh model of class ``model`` (PtychoPINN_Lightning); built when the trainer binds the data."""
        pm = cls(model_config=config_manager.model_config, data_config=config_manager.data_config,
                 training_config=config_manager.training_config, inference_config=config_manager.inference_config)
        pm.module_class = model
        return pm

    @staticmethod
    def _extract_configs_from_checkpoint(path: str | Path) -> tuple[Any, Any, Any, Any]:
        """``(data, model, training, inference)`` config dicts saved in a checkpoint (None where absent);
        read with ``torch.load(weights_only=True)`` on the CPU."""
        import torch

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint not found: {p}")
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
        return (hp.get("data_config"), hp.get("model_config"), hp.get("training_config"),
                hp.get("inference_config"))


class Trainer:
    """Lightning training of a :class:`PtychoModel` on a :class:`PtychoDataLoader`: the core's two-step
    training run (:func:`ptychopinn.training.run.prepare_training`, then ``fit``) with the reference module.

    Attributes:
        _trainer: the ``lightning.pytorch.Trainer`` (callbacks may be appended before :meth:`train`).
        datamodule: the core data module; run_dir: where checkpoints and logs go.
    """

    def __init__(self, run: TrainingRun, model: PtychoModel) -> None:
        self._run = run
        self._trainer = run.trainer
        self.model = model
        self.datamodule = run.datamodule
        self.run_dir = run.output_dir

    @classmethod
    def _from_lightning(cls, model: PtychoModel, dataloader: PtychoDataLoader, orchestration: str = "lightning",
                        config_manager: ConfigManager | None = None) -> Trainer:
        """Bind the data: group, normalise, build the module (assigned to ``model.model``) and the Trainer."""
        from ptycho_torch.model import PtychoPINN_Lightning
        from ptychopinn.training.run import prepare_training

        if str(orchestration).lower() != "lightning":
            raise ConfigError(f"orchestration: expected 'lightning', found {orchestration!r}")
        if dataloader.output_dir is None:
            raise ConfigError("Trainer._from_lightning: expected a training loader with an output_dir, found an "
                              "inference loader; build PtychoDataLoader(data_dir=..., output_dir=...)")
        cm = config_manager or dataloader.config_manager
        core = cm.core_configs(n_points=dataloader.scan.n_points)
        module_cls = model.module_class or PtychoPINN_Lightning

        def reference_module(dm: Any) -> Any:
            return module_cls(model_config=cm.model_config, data_config=cm.data_config,
                              training_config=cm.training_config, inference_config=cm.inference_config,
                              core={"model": core["model"].to_dict(), "training": core["training"].to_dict(),
                                    "intensity_scale": float(dm.intensity_scale),
                                    "input_scale": float(dm.input_scale), "has_validation": bool(dm.has_val)},
                              probe=dataloader.scan.probe)

        run = prepare_training(dataloader.scan, model=core["model"], training=core["training"],
                               execution=core["execution"], output_dir=Path(dataloader.output_dir),
                               module_factory=reference_module)
        model.model = run.module
        _report_photon_scale(cm.model_config, run.datamodule)
        return cls(run, model)

    def train(self, orchestration: str = "lightning", experiment_name: str = "") -> dict[str, Any]:
        """Fit; returns ``{'run_dir', 'epochs_completed'}``. Raises ``TrainingDivergedError`` on a non-finite loss
        (naming the last good checkpoint)."""
        result = self._run.fit(loss_plot=False, resume_hint="its weights load with "
                               "ptycho_torch.model.PtychoPINN_Lightning.load_from_checkpoint")
        return {"run_dir": self.run_dir, "epochs_completed": result.epochs_completed}


_DEFAULT_INTENSITY_SCALE = 10000.0  # what ptychodus sends unless the user changes it
_warned: set[str] = set()


def _report_photon_scale(model_config: ModelConfig, dm: Any) -> None:
    """Say which photon scale the likelihood uses, and that ``intensity_scale`` is not it.

    ptychodus sends ``intensity_scale`` (default 1e4, an initial guess of the reference's learnable scale).
    ptychopinn has no such knob: the Poisson likelihood works on the measured counts, whose mean total per
    pattern it measures from the training data (or takes from ``DataConfig.nphotons``), so the value is not
    used. INFO at ptychodus's default; a RuntimeWarning (once per process) when the user changed it and may
    expect an effect."""
    source = "measured from the training patterns" if dm.nphotons_source == "measured" else "DataConfig.nphotons"
    value = float(model_config.intensity_scale)
    msg = (f"ModelConfig.intensity_scale={value:g} is not used: the Poisson likelihood uses the photon scale of "
           f"the data, {float(dm.nphotons):.4g} counts per pattern ({source}; intensity scale "
           f"{float(dm.intensity_scale):.4g} = sqrt(counts)/(N/2))")
    if math.isclose(value, _DEFAULT_INTENSITY_SCALE) or "intensity_scale" in _warned:
        logger.info(msg)
        return
    _warned.add("intensity_scale")
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


class InferenceEngine:
    """Reconstruction with a loaded or trained :class:`PtychoModel`."""

    def __init__(self, config_manager: ConfigManager, ptycho_model: PtychoModel) -> None:
        if ptycho_model.model is None:
            raise ConfigError("InferenceEngine: expected a PtychoModel with a trained or loaded module, found "
                              "model=None; train it or load a checkpoint first")
        self.config_manager = config_manager
        self.ptycho_model = ptycho_model

    def predict_and_stitch(self, loader: PtychoDataLoader) -> np.ndarray:
        """Predict every scan point and stitch: a 2-D complex64 numpy array (rows = y, columns = x).

        Convention (ptychodus's, which labels the result with its object's centre and pixel size): the
        positions are ptychodus object pixels, the object point at a position lies under the patch's geometric
        centre ``(N-1)/2`` (``ProbeGeometry.resolve_patch_bounds``), and the canvas has odd sides with its
        centre pixel ``((H-1)/2, (W-1)/2)`` exactly on the midpoint of the scan's bounding box, the centre
        ptychodus gives the objects it sizes for a scan (``compute_object_geometry``). Canvas pixel
        ``(row, col)`` is object point ``(mid_y - (H-1)/2 + row, mid_x - (W-1)/2 + col)``, sampled exactly
        (sub-pixel Fourier placement). Pixels no patch reached are 0. Deterministic: grouping is seeded.
        """
        from ptychopinn.config import InferenceConfig as CoreInference
        from ptychopinn.inference.predict import check_scan_fits_model, iter_predictions, scan_groups
        from ptychopinn.inference.stitch import Stitcher, centred_geometry
        from ptychopinn.io.product_h5 import ptychodus_centre_offset
        from ptychopinn.runtime import resolve_device

        cm = self.config_manager
        core_model = self.ptycho_model.model.model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            accelerator, _, _ = resolve_hardware(cm.training_config.device, 1, "auto")
        cfg = CoreInference.reference(batch_size=int(cm.inference_config.batch_size))
        device = resolve_device(accelerator)
        scan = loader.scan
        n = scan.N
        check_scan_fits_model(core_model.config, scan)
        window = cfg.window_for(n)
        shift = ptychodus_centre_offset(n)  # ptychodus position -> object point under patch pixel N//2
        mid = 0.5 * (scan.positions.min(axis=0) + scan.positions.max(axis=0))
        shape, origin = centred_geometry(scan.positions + shift, window, centre=mid)
        stitcher = Stitcher(shape, window, origin=origin, device=device, taper=cfg.stitch_taper)
        groups = scan_groups(scan.positions, core_model.config.gridsize)
        core_model.eval()
        for patches, member_pos in iter_predictions(core_model, scan, groups, batch_size=cfg.batch_size,
                                                    precision=cfg.precision, device=device):
            stitcher.add(patches.reshape(-1, n, n), member_pos.reshape(-1, 2) + shift)
        out = stitcher.result()[0]
        core_model.to("cpu")
        return out
