"""Reference-named configuration dataclasses of the PyTorch backend (what ptychodus's PtychoPINN-Torch sends).

ptychodus builds ``DataConfig``, ``ModelConfig``, ``TrainingConfig``, ``InferenceConfig`` and ``DatagenConfig``
in its GUI process by keyword, pickles them into a spawned child and mutates ``TrainingConfig.n_devices`` there.
So these classes are plain, mutable, picklable dataclasses with a default for every field. Importing this module
is cheap: standard library plus :mod:`ptychopinn.config` (no torch, no Lightning, no CUDA).

Knobs fall into three groups:

* honoured: mapped onto the core configs by :func:`to_core_configs` (shapes, grouping, losses, optimiser,
  schedule, hardware, inference batch size);
* accepted without effect (also without effect upstream): ``nll``, ``intensity_scale`` (the likelihood uses the
  measured dose; training logs which, and warns once when the value was changed), ``max_position_jitter``,
  ``edge_pad``, ``decoder_last_c_outer_fraction``, ``offset``, ``middle_trim``, ``pad_eval``, ``window``,
  ``notes``, ``model_name``, ``framework``, ``orchestrator``, ``experiment_number``;
* research knobs this implementation does not have: accepted at their defaults, a :class:`ConfigError`
  naming the field when set to anything else (checked at construction and again by ``ConfigManager``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ptychopinn.config_fields import is_int, is_num
from ptychopinn.data.grouping import effective_neighbor_count
from ptychopinn.errors import ConfigError

__all__ = ["DataConfig", "DatagenConfig", "InferenceConfig", "ModelConfig", "TrainingConfig",
           "config_from_dict", "config_to_dict", "map_scheduler", "to_core_configs"]


def _reject_research(obj: Any, defaults: dict[str, Any]) -> None:
    """Raise a one-line ConfigError for the first research knob that differs from its supported value."""
    for name, supported in defaults.items():
        value = getattr(obj, name)
        same = value == supported
        if isinstance(supported, float) and is_num(value):
            same = math.isclose(float(value), supported)
        if not same:
            raise ConfigError(f"{type(obj).__name__}.{name}: expected {supported!r} (this research option is not "
                              f"implemented by ptychopinn), found {value!r}; reset it to {supported!r}")


@dataclass
class DataConfig:
    """Data layout and grouping. ``N`` is the diffraction pattern size (pixels, must equal the data's);
    ``C`` patterns per sample with ``grid_size = (gy, gx)`` and ``C == gy * gx`` (square grids only);
    ``K`` nearest neighbours to group from; ``n_subsample`` groups drawn per scan point; ``x_bounds`` /
    ``y_bounds`` the fraction of the coordinate range whose points are used for training."""

    N: int = 64
    C: int = 4
    K: int = 6
    K_quadrant: int = 30
    n_subsample: int = 7
    grid_size: tuple[int, int] = (2, 2)
    normalize: str = "Batch"
    data_scaling: str = "Parseval"
    neighbor_function: str = "Nearest"
    scan_pattern: str = "Isotropic"
    probe_normalize: bool = True
    probe_scale: float = 4.0
    probe_ramp_removal: bool = False
    phase_subtraction: bool = True
    x_bounds: tuple[float, float] = (0.1, 0.9)
    y_bounds: tuple[float, float] = (0.1, 0.9)
    min_neighbor_distance: float = 0.0
    max_neighbor_distance: float = 3.0
    nphotons: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the values this implementation relies on (one-line ConfigError on the first problem)."""
        for name in ("N", "C", "K", "n_subsample"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise ConfigError(f"DataConfig.{name}: expected a positive integer, found {v!r}")
        gs = tuple(self.grid_size) if isinstance(self.grid_size, (tuple, list)) else None
        if gs is None or len(gs) != 2 or gs[0] != gs[1] or gs[0] < 1:
            raise ConfigError(f"DataConfig.grid_size: expected a square (gy, gx) grid such as (2, 2), found "
                              f"{self.grid_size!r}; set grid_size_x == grid_size_y")
        if self.C != gs[0] * gs[1]:
            raise ConfigError(f"DataConfig.C: expected grid_size_y*grid_size_x = {gs[0] * gs[1]}, found {self.C}; "
                              f"set num_channels to {gs[0] * gs[1]}")
        for name in ("x_bounds", "y_bounds"):
            b = getattr(self, name)
            if (not isinstance(b, (tuple, list)) or len(b) != 2
                    or not (0.0 <= float(b[0]) < float(b[1]) <= 1.0)):
                raise ConfigError(f"DataConfig.{name}: expected (lower, upper) with 0 <= lower < upper <= 1, "
                                  f"found {b!r}")
        if self.normalize != "Batch":
            raise ConfigError(f"DataConfig.normalize: expected 'Batch' (one normalisation per dataset; 'Group' is "
                              f"not implemented), found {self.normalize!r}; use 'Batch'")
        if self.data_scaling != "Parseval":
            raise ConfigError(f"DataConfig.data_scaling: expected 'Parseval' ('Max' is not implemented), found "
                              f"{self.data_scaling!r}; use 'Parseval'")
        if self.probe_normalize is not True:
            raise ConfigError(f"DataConfig.probe_normalize: expected True (ptychopinn always normalises the probe "
                              f"energy via probe_scale), found {self.probe_normalize!r}; set it to True")
        if not (isinstance(self.probe_scale, (int, float)) and self.probe_scale > 0):
            raise ConfigError(f"DataConfig.probe_scale: expected a number > 0, found {self.probe_scale!r}")
        _reject_research(self, {"neighbor_function": "Nearest", "probe_ramp_removal": False})


@dataclass
class ModelConfig:
    """Architecture and loss. ``mode`` 'Unsupervised' (physics loss) or 'Supervised' (needs labels);
    ``loss_function`` 'Poisson' or 'MAE'; ``amp_activation`` 'silu' or 'sigmoid'; ``cbam_encoder`` turns on
    CBAM attention in the encoder of the core 'cnn' generator."""

    mode: str = "Unsupervised"
    architecture: str = "cnn"
    object_big: bool = True
    probe_big: bool = True
    loss_function: str = "Poisson"
    amp_activation: str = "silu"
    n_filters_scale: int = 2
    cbam_encoder: bool = True
    C_model: int = 4
    C_forward: int = 4
    decoder_last_amp_channels: int = 4
    probe_mask: Any = None
    intensity_scale: float = 10000.0
    intensity_scale_trainable: bool = False
    max_position_jitter: int = 10
    edge_pad: int = 10
    decoder_last_c_outer_fraction: float = 0.125
    offset: int = 6
    num_datasets: int = 1
    use_shared_decoder: bool = False
    eca_encoder: bool = False
    eca_decoder: bool = False
    batch_norm: bool = False
    cbam_bottleneck: bool = False
    cbam_decoder: bool = False
    spatial_decoder: bool = False
    decoder_spatial_kernel: int = 7
    amp_loss: str | None = None
    phase_loss: str | None = None
    amp_loss_coeff: float = 1.0
    phase_loss_coeff: float = 1.0
    probe_reference_coeff: float = 0.0
    amplitude_variance_loss: bool = False
    amplitude_variance_coeff: float = 0.01

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check choices and reject research knobs set to values that are not implemented."""
        choices = {"mode": ("Unsupervised", "Supervised"), "loss_function": ("Poisson", "MAE"),
                   "amp_activation": ("silu", "sigmoid", "swish"), "architecture": ("cnn",)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"ModelConfig.{name}: expected one of {list(allowed)}, found "
                                  f"{getattr(self, name)!r}")
        if not is_int(self.n_filters_scale) or self.n_filters_scale < 1:
            raise ConfigError(f"ModelConfig.n_filters_scale: expected a positive integer, found "
                              f"{self.n_filters_scale!r}")
        if self.probe_mask is not None and self.probe_mask is not False:
            raise ConfigError(f"ModelConfig.probe_mask: expected None (custom probe masks are not implemented), "
                              f"found {type(self.probe_mask).__name__}; pass None")
        _reject_research(self, {
            "use_shared_decoder": False, "eca_encoder": False, "eca_decoder": False, "batch_norm": False,
            "cbam_bottleneck": False, "cbam_decoder": False, "spatial_decoder": False, "decoder_spatial_kernel": 7,
            "amp_loss": None, "phase_loss": None, "probe_reference_coeff": 0.0, "amplitude_variance_loss": False,
            "intensity_scale_trainable": False, "num_datasets": 1})


SCHEDULER_MAP = {"Default": "constant", "Constant": "constant", "Exponential": "exponential",
                 "Cosine": "cosine", "CosineAnnealing": "cosine", "WarmupCosine": "cosine",
                 "Adaptive": "plateau", "ReduceLROnPlateau": "plateau"}


def map_scheduler(name: str) -> str:
    """Reference scheduler name -> core name ('constant', 'exponential', 'cosine', 'plateau').

    Core names pass through. 'MultiStage' (staged fine-tuning) is not implemented: ConfigError."""
    if name in ("constant", "exponential", "cosine", "plateau"):
        return name
    if name in SCHEDULER_MAP:
        return SCHEDULER_MAP[name]
    hint = " (MultiStage fine-tuning is not implemented)" if name == "MultiStage" else ""
    raise ConfigError(f"scheduler: expected one of {sorted(SCHEDULER_MAP)}, found {name!r}{hint}; "
                      f"use Default, Exponential, Cosine or ReduceLROnPlateau")


@dataclass
class TrainingConfig:
    """Optimisation and hardware. ``device`` 'cuda' falls back to the CPU (with a warning) when CUDA is absent;
    ``strategy`` 'ddp_spawn' with one device runs in this process; ``num_workers`` 0 is allowed."""

    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    n_devices: int = 1
    num_workers: int = 0
    accum_steps: int = 1
    gradient_clip_val: float | None = None
    nll: bool = True
    device: str = "cuda"
    strategy: str = "ddp_spawn"
    framework: str = "Lightning"
    orchestrator: str = "Lightning"
    scheduler: str = "Default"
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.1
    notes: str = ""
    model_name: str = "PtychoPINNv2"
    experiment_name: str = "Synthetic_Runs"
    output_dir: str | None = None
    train_data_file: str | None = None
    n_groups: int | None = None
    seed: int = 42
    val_fraction: float = 0.05
    epochs_fine_tune: int = 0
    fine_tune_gamma: float = 0.1
    enable_staged_finetuning: bool = False
    finetune_stage1_epochs: int = 7
    finetune_stage2_epochs: int = 7
    finetune_stage3_epochs: int = 5
    finetune_stage1_lr_decoder: float = 0.1
    finetune_stage2_lr_encoder_top: float = 0.01
    finetune_stage2_lr_decoder: float = 0.05
    finetune_stage2_lr_phase_head: float = 0.1
    finetune_stage3_lr_encoder_bottom: float = 0.005
    finetune_stage3_lr_encoder_top: float = 0.01
    finetune_stage3_lr_decoder: float = 0.02
    finetune_stage3_lr_phase_head: float = 0.05
    finetune_skip_stage3: bool = True
    finetune_early_stop_patience: int = 3
    finetune_val_split: float = 0.05
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values; reject staged fine-tuning (not implemented) when it is switched on."""
        for name in ("epochs", "batch_size", "n_devices", "accum_steps"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise ConfigError(f"TrainingConfig.{name}: expected a positive integer, found {v!r}")
        if not is_int(self.num_workers) or self.num_workers < 0:
            raise ConfigError(f"TrainingConfig.num_workers: expected an integer >= 0, found {self.num_workers!r}")
        if self.device not in ("cuda", "gpu", "cpu", "mps", "auto"):
            raise ConfigError(f"TrainingConfig.device: expected 'cuda' or 'cpu', found {self.device!r}")
        map_scheduler(self.scheduler)
        _reject_research(self, {"epochs_fine_tune": 0, "enable_staged_finetuning": False})


@dataclass
class InferenceConfig:
    """Reconstruction settings: ``batch_size`` groups per forward pass; ``patch_weighting`` 'probe' or
    'uniform' (both stitch with ptychopinn's coverage-normalised central-window average)."""

    batch_size: int = 1000
    middle_trim: int = 32
    experiment_number: int = 0
    patch_weighting: str = "probe"
    pad_eval: bool = True
    window: int = 20

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the batch size and the weighting name."""
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(f"InferenceConfig.batch_size: expected a positive integer, found {self.batch_size!r}")
        if self.patch_weighting not in ("probe", "uniform"):
            raise ConfigError(f"InferenceConfig.patch_weighting: expected 'probe' or 'uniform', found "
                              f"{self.patch_weighting!r}")


@dataclass
class DatagenConfig:
    """Simulation settings of the reference (carried through the ConfigManager; not used for training)."""

    objects_per_probe: int = 4
    diff_width: int = 64
    object_class: str = "dead_leaves"
    image_size: tuple[int, int] = (250, 250)
    probe_paths: list[str] = field(default_factory=list)
    beamstop_diameter: int = 4


_CLASSES: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig,
                             "inference": InferenceConfig, "datagen": DatagenConfig}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config (tuples become lists) — loadable with ``torch.load(weights_only=True)``."""
    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return int(v) if is_int(v) else v  # numpy integers do not load with weights_only=True
    return {k: plain(v) for k, v in asdict(cfg).items()}


def config_from_dict(kind: str, value: Any) -> Any:
    """A config instance of ``kind`` ('data', 'model', 'training', 'inference', 'datagen') from an instance or
    a dict (unknown keys are ignored with a warning, list values of tuple fields become tuples)."""
    cls = _CLASSES[kind]
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{cls.__name__}: expected a {cls.__name__} or a dict, found {type(value).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        warnings.warn(f"{cls.__name__}: ignoring unknown key(s) {unknown}", stacklevel=2)
    kwargs = {k: (tuple(v) if k in ("grid_size", "x_bounds", "y_bounds", "image_size") and isinstance(v, list)
                  else v) for k, v in value.items() if k in names}
    return cls(**kwargs)


def to_core_configs(data: DataConfig, model: ModelConfig, training: TrainingConfig,
                    inference: InferenceConfig, *, n_points: int | None = None) -> dict[str, Any]:
    """Map the reference configs onto ``ptychopinn.config`` objects.

    Returns a dict with ``model`` (ModelConfig), ``training`` (TrainingConfig), ``execution``
    (ExecutionConfig) and ``inference`` (InferenceConfig). ``n_points`` (scan points used for training) turns
    ``n_subsample`` groups per point into the core's ``n_groups``. Hardware: 'cuda' without CUDA runs on the
    CPU with a warning; one device never spawns processes.
    """
    from ptychopinn.config import REFERENCE_GENERATOR, ExecutionConfig
    from ptychopinn.config import InferenceConfig as CoreInference
    from ptychopinn.config import ModelConfig as CoreModel
    from ptychopinn.config import TrainingConfig as CoreTraining

    for cfg in (data, model, training, inference):
        cfg.validate()
    gridsize = int(data.grid_size[0])
    for name in ("C_model", "C_forward"):
        if getattr(model, name) != data.C:
            raise ConfigError(f"ModelConfig.{name}: expected DataConfig.C = {data.C}, found "
                              f"{getattr(model, name)}; use the same number of channels")
    core_model = CoreModel(
        N=data.N, gridsize=gridsize, n_filters_scale=model.n_filters_scale, generator=REFERENCE_GENERATOR,
        model_type="pinn" if model.mode == "Unsupervised" else "supervised",
        amp_activation="sigmoid" if model.amp_activation == "sigmoid" else "swish",
        object_big=bool(model.object_big), probe_big=bool(model.probe_big), probe_scale=float(data.probe_scale),
        cbam_encoder=bool(model.cbam_encoder))
    poisson = model.loss_function == "Poisson"
    lr = float(training.learning_rate)
    n_groups = training.n_groups
    if n_groups is None and n_points is not None and gridsize > 1:
        n_groups = int(n_points) * int(data.n_subsample)
    core_training = CoreTraining(
        batch_size=training.batch_size, nepochs=training.epochs, nphotons=data.nphotons,
        nll_weight=1.0 if poisson else 0.0, mae_weight=0.0 if poisson else 1.0,
        n_groups=n_groups, enable_oversampling=gridsize > 1 and n_groups is not None,
        neighbor_count=effective_neighbor_count(data.K, gridsize), learning_rate=lr,
        scheduler=map_scheduler(training.scheduler),
        warmup_epochs=int(training.warmup_epochs), min_learning_rate=lr * float(training.min_lr_ratio),
        val_fraction=float(training.val_fraction), seed=int(training.seed), subsample_seed=int(training.seed))
    accelerator, devices, strategy = resolve_hardware(training.device, training.n_devices, training.strategy)
    execution = ExecutionConfig(
        accelerator=accelerator, devices=devices, strategy=strategy, num_workers=int(training.num_workers),
        gradient_clip_val=training.gradient_clip_val, accumulate_grad_batches=int(training.accum_steps),
        logger="csv", enable_progress_bar=False, deterministic=True)
    core_inference = CoreInference.reference(batch_size=int(inference.batch_size), accelerator=accelerator)
    return {"model": core_model, "training": core_training, "execution": execution, "inference": core_inference}


def resolve_hardware(device: str, n_devices: int, strategy: str) -> tuple[str, int, str]:
    """``(accelerator, devices, strategy)`` for the core ExecutionConfig.

    'cuda'/'gpu' becomes 'cpu' (with a RuntimeWarning) when no CUDA device is visible; the CPU or a single
    device always runs in this process (strategy 'auto'); several GPUs keep 'ddp'/'ddp_spawn'.
    """
    import importlib.util

    accelerator = {"gpu": "cuda"}.get(device, device)
    if accelerator == "cuda":
        available = 0
        if importlib.util.find_spec("torch") is not None:
            import torch

            available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            warnings.warn("device 'cuda' requested but no CUDA device is available; running on the CPU",
                          RuntimeWarning, stacklevel=2)
            accelerator = "cpu"
        else:
            n_devices = min(int(n_devices), available)
    if accelerator != "cuda" or n_devices <= 1:
        return accelerator, 1, "auto"
    core_strategy = strategy if strategy in ("ddp", "ddp_spawn") else "ddp"
    return accelerator, int(n_devices), core_strategy
