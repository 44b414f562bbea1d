"""Configuration: frozen dataclasses validated on construction, with a JSON/dict round trip.

These dataclasses are the one source of truth for every knob. Field names follow the reference
PtychoPINN system where it has them (``N``, ``gridsize``, ``n_filters_scale``, ``nphotons``,
``n_groups`` ...). Construction validates every field and raises :class:`ConfigError` with a
message naming the field, the allowed values and the value found. ``from_dict`` rejects unknown
keys (so a typo in a config file is an error, not a silently ignored setting).

The field checks and the shared base class (dict/JSON round trip, ``replace``) are in
:mod:`ptychopinn.config_fields`; reading config files is :mod:`ptychopinn.config_files`.

Importing this module is cheap (standard library only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ptychopinn.config_fields import (
    MAX_INT,
    ConfigBase,
    check_bool,
    check_choice,
    check_int,
    check_num,
    is_int,
    is_num,
    require,
)
from ptychopinn.errors import ConfigError

AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")
REFERENCE_GENERATOR = "cnn"
"""The generator that follows the reference PtychoPINN architecture; the compatibility surfaces use it,
because the settings they receive (filter scale, CBAM, amplitude activation) describe that network."""
REFERENCE_N_FILTERS_SCALE = 2
"""The reference network's width multiplier, for compatibility surfaces that receive none."""
MODEL_TYPES = ("pinn", "supervised")
SCHEDULERS = ("constant", "exponential", "cosine", "plateau")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
LOGGERS = ("csv", "tensorboard", "mlflow", "none")
CLIP_ALGORITHMS = ("norm", "value")
STITCH_SYNC = ("auto", "off", "phase", "phase+amplitude")
UNITS = ("amplitude", "intensity", "auto")
OBJECT_KINDS = ("lines", "grf", "image")
PROBE_KINDS = ("focused", "gaussian")
SCAN_PATTERNS = ("raster", "spiral")


@dataclass(frozen=True)
class ModelConfig(ConfigBase):
    """Architecture and physics of the model.

    ``N`` is the patch / detector size in pixels (a multiple of 8 from 32 to 256). ``gridsize`` g
    gives C = g*g diffraction patterns per sample. ``probe_scale`` fixes the probe normalisation:
    the illuminating probe is rescaled to total energy ``(probe_scale * N / 4)**2`` so that a fully
    transmitting object reconstructs at amplitude ``2 / probe_scale`` (0.5 by default), well
    inside the range of every amplitude activation. ``generator``: ``'unet'`` (default) or ``'cnn'`` (the
    reference architecture, :data:`REFERENCE_GENERATOR`). ``n_filters_scale``: width multiplier; the
    default 1 is the measured choice (README, Quality benchmark and Performance); the reference surfaces pass
    their own width 2. ``offset_channels`` (gridsize > 1): the generator also reads every member's offset from
    its group's centre (two constant maps per pattern), so it knows the arrangement of the patches it must
    make agree (groups draw their neighbours at random, so it differs from group to group); off by default,
    measured in README "Where the network stands".
    """

    N: int = 64
    gridsize: int = 1
    n_filters_scale: int = 1
    model_type: str = "pinn"
    generator: str = "unet"
    amp_activation: str = "sigmoid"
    object_big: bool = True
    probe_big: bool = True
    probe_mask: bool = False
    pad_object: bool = True
    probe_scale: float = 4.0
    gaussian_smoothing_sigma: float = 0.0
    probe_trainable: bool = False
    intensity_scale_trainable: bool = False
    cbam_encoder: bool = False
    offset_channels: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("N", self.N, 32, 256)
        require(self.N % 8 == 0, "N", "a multiple of 8 from 32 to 256", self.N)
        check_int("gridsize", self.gridsize, 1, 8)
        check_int("n_filters_scale", self.n_filters_scale, 1, 64)
        check_choice("model_type", self.model_type, MODEL_TYPES)
        require(isinstance(self.generator, str) and bool(self.generator), "generator",
                 "a registered generator name such as 'cnn'", self.generator)
        check_choice("amp_activation", self.amp_activation, AMP_ACTIVATIONS)
        for name in ("object_big", "probe_big", "probe_mask", "pad_object", "probe_trainable",
                     "intensity_scale_trainable", "cbam_encoder", "offset_channels"):
            check_bool(name, getattr(self, name))
        check_num("probe_scale", self.probe_scale, 0.0, strict=True)
        check_num("gaussian_smoothing_sigma", self.gaussian_smoothing_sigma, 0.0)

    @property
    def channels(self) -> int:
        """C = gridsize**2, the number of patterns per sample."""
        return self.gridsize * self.gridsize

    @property
    def input_channels(self) -> int:
        """Channels the generator reads: C patterns, plus two offset maps per pattern with ``offset_channels``
        at gridsize > 1."""
        return 3 * self.channels if self.offset_channels and self.channels > 1 else self.channels


@dataclass(frozen=True)
class TrainingConfig(ConfigBase):
    """Data selection, loss and optimisation.

    ``nphotons`` is the mean total photon count per pattern used by the Poisson likelihood
    (``intensity_scale = sqrt(nphotons) / (N/2)``); ``None`` measures it from the training data,
    which is right whenever the data are detector counts (or their square root).
    ``n_groups`` is the number of training samples (groups) to draw; ``None`` uses one group per
    scan point. Loss weights: total = nll_weight*Poisson + mae_weight*MAE(amplitude)
    + realspace_weight*realspace_mae_weight*MAE(object).
    """

    batch_size: int = 16
    nepochs: int = 50
    nphotons: float | None = None
    nll_weight: float = 1.0
    mae_weight: float = 0.0
    realspace_weight: float = 0.0
    realspace_mae_weight: float = 0.0
    n_groups: int | None = None
    n_subsample: int | None = None
    subsample_seed: int = 42
    neighbor_count: int = 4
    sequential_sampling: bool = False
    enable_oversampling: bool = False
    learning_rate: float = 1e-3
    scheduler: str = "constant"
    scheduler_gamma: float = 0.95
    warmup_epochs: int = 0
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_learning_rate: float = 1e-5
    early_stop_patience: int | None = None
    val_fraction: float = 0.1
    seed: int = 42

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("batch_size", self.batch_size, 1)
        check_int("nepochs", self.nepochs, 1)
        check_num("nphotons", self.nphotons, 0.0, strict=True, optional=True)
        for name in ("nll_weight", "mae_weight", "realspace_weight", "realspace_mae_weight"):
            check_num(name, getattr(self, name), 0.0)
        require(self.nll_weight + self.mae_weight + self.realspace_weight > 0, "nll_weight",
                 "at least one of nll_weight, mae_weight, realspace_weight > 0",
                 (self.nll_weight, self.mae_weight, self.realspace_weight))
        check_int("n_groups", self.n_groups, 1, optional=True)
        check_int("n_subsample", self.n_subsample, 1, optional=True)
        check_int("subsample_seed", self.subsample_seed, 0)
        check_int("neighbor_count", self.neighbor_count, 1)
        for name in ("sequential_sampling", "enable_oversampling"):
            check_bool(name, getattr(self, name))
        check_num("learning_rate", self.learning_rate, 0.0, strict=True)
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        check_num("scheduler_gamma", self.scheduler_gamma, 0.0, strict=True)
        require(self.scheduler_gamma <= 1.0, "scheduler_gamma", "a number in (0, 1]",
                 self.scheduler_gamma)
        check_int("warmup_epochs", self.warmup_epochs, 0)
        check_num("plateau_factor", self.plateau_factor, 0.0, strict=True)
        require(self.plateau_factor < 1.0, "plateau_factor", "a number in (0, 1)", self.plateau_factor)
        check_int("plateau_patience", self.plateau_patience, 0)
        check_num("min_learning_rate", self.min_learning_rate, 0.0)
        check_int("early_stop_patience", self.early_stop_patience, 1, optional=True)
        check_num("val_fraction", self.val_fraction, 0.0)
        require(self.val_fraction < 0.9, "val_fraction", "a number in [0, 0.9)", self.val_fraction)
        check_int("seed", self.seed, 0)

    # fields of earlier versions that nothing read; checkpoints written then still carry them
    RETIRED_FIELDS: ClassVar[frozenset[str]] = frozenset({"positions_provided", "output_dir"})


@dataclass(frozen=True)
class ExecutionConfig(ConfigBase):
    """How training runs: hardware, precision, parallelism, logging and checkpoints.

    Passed straight to the Lightning ``Trainer``. ``accelerator='gpu'`` and ``'cuda'`` are the same.
    ``precision='bf16-mixed'`` works on CPU and GPU. ``deterministic`` seeds everything and turns
    on deterministic algorithms (bit-exact CPU runs with ``num_workers=0``). ``rendezvous_timeout``: seconds
    a distributed (DDP) run waits for all its processes to join, and for any one collective operation,
    before it fails with a clear error (torch's own default is 30 minutes).
    """

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32"
    deterministic: bool = True
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1
    num_workers: int = 0
    logger: str = "csv"
    enable_progress_bar: bool = True
    enable_checkpointing: bool = True
    checkpoint_save_top_k: int = 1
    num_threads: int | None = None
    rendezvous_timeout: float = 300.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("accelerator", self.accelerator, ACCELERATORS)
        require(self.devices == "auto" or (is_int(self.devices) and 1 <= self.devices <= MAX_INT), "devices",
                 "a positive integer or 'auto'", self.devices)
        check_int("num_nodes", self.num_nodes, 1)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("precision", self.precision, PRECISIONS)
        check_bool("deterministic", self.deterministic)
        check_num("gradient_clip_val", self.gradient_clip_val, 0.0, strict=True, optional=True)
        check_choice("gradient_clip_algorithm", self.gradient_clip_algorithm, CLIP_ALGORITHMS)
        check_int("accumulate_grad_batches", self.accumulate_grad_batches, 1)
        check_int("num_workers", self.num_workers, 0)
        check_choice("logger", self.logger, LOGGERS)
        check_bool("enable_progress_bar", self.enable_progress_bar)
        check_bool("enable_checkpointing", self.enable_checkpointing)
        check_int("checkpoint_save_top_k", self.checkpoint_save_top_k, 0)
        check_int("num_threads", self.num_threads, 1, optional=True)
        check_num("rendezvous_timeout", self.rendezvous_timeout, 0.0, strict=True)
        require(self.rendezvous_timeout <= 86400, "rendezvous_timeout", "at most 86400 seconds",
                 self.rendezvous_timeout)


@dataclass(frozen=True)
class InferenceConfig(ConfigBase):
    """Reconstruction: batching, precision and stitching.

    ``stitch_window`` is the side in pixels of the central region of each predicted patch that is
    placed on the canvas (the rest of the patch is less reliable); ``None`` uses ``N * 5 // 16``
    (20 px at N=64, the reference value). ``stitch_taper`` weights each window's centre up to
    ``1 + stitch_taper`` times its edges (0 = uniform average, as the reference; the default 10 is the
    measured choice, README), which softens seams between neighbouring patches. ``stitch_sync``:
    ``'phase'`` multiplies each window by the
    phase offset that makes it agree with its overlapping neighbours, solved for the whole scan at once
    (phase synchronisation, :mod:`ptychopinn.inference.phase_sync`); ``'phase+amplitude'`` also
    equalises amplitude gains; ``'off'`` averages the windows as predicted; ``'auto'`` (default) is
    ``'phase'`` for gridsize 1 and ``'off'`` otherwise, and ``'off'`` when the image only starts refinement
    (a synchronised start refines to a lower phase; README). A network that sees one pattern at a time is
    blind to each patch's constant phase, which synchronisation restores (amplitude synchronisation did not
    help; README); at gridsize > 1 the overlap constraint already ties the phases of a group, and keeping every
    window of every group would double the memory of a large scan. A scan whose windows would need more
    than a quarter of the memory limit to keep falls back to ``'off'`` with a warning. Grouping at inference
    takes no settings: every point seeds one group of itself and its C-1 nearest neighbours.
    """

    batch_size: int = 64
    stitch_window: int | None = None
    stitch_taper: float = 10.0
    stitch_sync: str = "auto"
    precision: str = "32"
    accelerator: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("batch_size", self.batch_size, 1)
        check_int("stitch_window", self.stitch_window, 2, optional=True)
        check_num("stitch_taper", self.stitch_taper, 0.0)
        check_choice("stitch_sync", self.stitch_sync, STITCH_SYNC)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("accelerator", self.accelerator, ACCELERATORS)

    @classmethod
    def reference(cls, **changes: Any) -> InferenceConfig:
        """The reference system's stitching, for the compatibility surfaces: a plain average of the windows
        (taper 0), no phase synchronisation (measured: README, section "Use from ptychodus"). ``changes``:
        other fields."""
        return cls(**{"stitch_taper": 0.0, "stitch_sync": "off", **changes})

    def window_for(self, N: int) -> int:
        """Stitch window in pixels for patch size ``N`` (clipped to N)."""
        w = self.stitch_window if self.stitch_window is not None else max(2, (N * 5) // 16)
        return min(w, N)


NOISE_MODELS = ("gaussian", "poisson")
REFINE_ENGINES = ("auto", "cg", "rpie")


@dataclass(frozen=True)
class RefineConfig(ConfigBase):
    """Iterative refinement of a reconstruction on the physics (:mod:`ptychopinn.refine`; measured choices of
    every default: README "Refinement").

    ``engine``: ``'cg'`` (``warmup`` rPIE passes, then whole-scan preconditioned conjugate gradients with exact
    step lengths; object only), ``'rpie'`` (mini-batch rPIE; also probe and positions) or ``'auto'`` (``'cg'``
    when only the object is refined and its far-field cache fits a quarter of the memory limit, else
    ``'rpie'``). ``iterations``: the most passes over all patterns. ``tolerance``: stop once the misfit has
    changed by less than this fraction in each of the last 5 passes without rising over them (0 or None: run
    all). ``time_limit``: seconds (None = no limit). ``noise``: the misfit, ``'gaussian'`` (amplitude least
    squares), ``'poisson'`` (negative log-likelihood of the counts) or ``'auto'`` (Gaussian for ``'cg'``,
    Poisson for ``'rpie'``). ``batch_size``: patterns per rPIE mini-batch (and per chunk of the cg engine), in a
    seeded random order. ``alpha``: regularisation of the illumination preconditioner in (0, 1], or None for
    the engine's default (0.1 for ``'rpie'``, 0.01 for ``'cg'``); ``step``: rPIE object step length (1 = full
    step). ``momentum``: after each rPIE pass the object moves on by ``momentum`` times its accumulated change
    (heavy-ball acceleration of the slow, large-scale phase; 0 = plain rPIE).
    ``refine_probe`` updates the probe from iteration ``probe_start`` on (energy held fixed, so the
    object/probe scale cannot drift); ``'auto'`` refines it when the probe was estimated from the data or a
    short trial shows that probe updates lower the misfit markedly (:mod:`ptychopinn.refine.probe_choice`);
    kept with ``engine='cg'``. ``probe_search``: start an estimated probe from the best of several defocus
    candidates scored by a short trial (``'auto'``: when the probe was estimated). ``refine_positions``
    corrects positions from iteration ``position_start`` on: a search of integer offsets up to
    ``position_search_radius`` pixels (None: N/2; 0: none) by data misfit against the object of the other
    patterns, every 4 iterations in coarse-to-fine cycles (:mod:`ptychopinn.refine.positions`), and
    least-squares sub-pixel steps of at most ``max_position_step`` pixels per iteration; the affine part of the
    correction is removed and badly fitting patterns weigh less in the object update meanwhile.
    ``probe_modes``: incoherent modes K of a mixed-state probe (:mod:`ptychopinn.refine.modes`); None = as many
    as the scan carries; modes beyond the scan's are added and must be refined. ``accelerator``: where the
    iterations run. ``seed`` fixes the mini-batch order (deterministic on the CPU). ``prior_weight``: pull the
    object toward a prior image (the network's, or the start) with this weight relative to the data at a
    typically lit pixel (:mod:`ptychopinn.refine.prior`; 0 = off).
    """

    iterations: int = 200
    time_limit: float | None = None
    tolerance: float | None = 1e-4
    engine: str = "auto"
    warmup: int = 10
    batch_size: int = 64
    noise: str = "auto"
    alpha: float | None = None
    step: float = 1.0
    momentum: float = 0.8
    refine_probe: bool | str = "auto"
    probe_start: int = 2
    probe_search: bool | str = "auto"
    refine_positions: bool = False
    probe_modes: int | None = None
    position_start: int = 3
    position_search_radius: int | None = None
    max_position_step: float = 0.5
    accelerator: str = "cpu"
    seed: int = 0
    prior_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("iterations", self.iterations, 1)
        check_num("prior_weight", self.prior_weight, 0.0)
        check_num("time_limit", self.time_limit, 0.0, strict=True, optional=True)
        check_int("batch_size", self.batch_size, 1)
        check_num("tolerance", self.tolerance, 0.0, optional=True)
        check_choice("engine", self.engine, REFINE_ENGINES)
        check_int("warmup", self.warmup, 0)
        check_choice("noise", self.noise, ("auto", *NOISE_MODELS))
        check_num("alpha", self.alpha, 0.0, strict=True, optional=True)
        require(self.alpha is None or self.alpha <= 1.0, "alpha", "a number in (0, 1]", self.alpha)
        check_num("step", self.step, 0.0, strict=True)
        require(self.step <= 2.0, "step", "a number in (0, 2]", self.step)
        check_num("momentum", self.momentum, 0.0)
        require(self.momentum < 1.0, "momentum", "a number in [0, 1)", self.momentum)
        for name in ("refine_probe", "probe_search"):
            value = getattr(self, name)
            require(isinstance(value, bool) or value == "auto", name, "true, false or 'auto'", value)
        check_bool("refine_positions", self.refine_positions)
        check_int("probe_modes", self.probe_modes, 1, optional=True)
        check_int("probe_start", self.probe_start, 0)
        check_int("position_start", self.position_start, 0)
        check_int("position_search_radius", self.position_search_radius, 0, optional=True)
        check_num("max_position_step", self.max_position_step, 0.0, strict=True)
        check_choice("accelerator", self.accelerator, ACCELERATORS)
        check_int("seed", self.seed, 0)

    def resolved_alpha(self, engine: str) -> float:
        """The preconditioner regularisation ``engine`` (``'cg'`` or ``'rpie'``) uses under this configuration."""
        if self.alpha is not None:
            return float(self.alpha)
        return 0.01 if engine == "cg" else 0.1

    def resolved_noise(self, engine: str) -> str:
        """The misfit ``engine`` (``'cg'`` or ``'rpie'``) minimises under this configuration."""
        if self.noise != "auto":
            return self.noise
        return "gaussian" if engine == "cg" else "poisson"


@dataclass(frozen=True)
class SimulationConfig(ConfigBase):
    """A simulated scan: object, probe, scan pattern and dose.

    ``object_kind``: 'lines', 'grf' (Gaussian random field) or 'image' (a bundled natural image,
    chosen by ``image_name``; the phase comes from ``phase_image``, by default a fixed partner image).
    ``probe_kind``: 'focused' (a circular aperture propagated to give a
    spot with side lobes) or 'gaussian'. ``scan``: 'raster' (with ``jitter`` pixels of random
    displacement) or 'spiral' (Fermat). The scan step is set by ``overlap``, the linear overlap
    fraction of neighbouring probe footprints (step = (1 - overlap) * probe diameter).
    ``nphotons`` is the expected mean total count per pattern; ``poisson=False`` gives the
    noiseless expected amplitudes at that dose. ``oversample`` s > 1 forms the exit waves on a grid s
    times finer and keeps the central N x N of the far field (data that do not follow the
    reconstruction's pixel model, as real detectors do not; the benchmarks use 2).
    """

    N: int = 64
    object_size: int = 256
    object_kind: str = "image"
    image_name: str = "camera"
    phase_image: str | None = None
    amplitude_range: tuple[float, float] = (0.5, 1.0)
    phase_range: tuple[float, float] = (-1.0, 1.0)
    probe_kind: str = "focused"
    probe_diameter: float | None = None
    scan: str = "raster"
    overlap: float = 0.7
    jitter: float = 0.5
    n_points: int | None = None
    nphotons: float = 1e6
    poisson: bool = True
    seed: int = 0
    oversample: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("N", self.N, 16, 512)
        check_int("oversample", self.oversample, 1, 8)
        require(self.N % 2 == 0, "N", "an even integer", self.N)
        check_int("object_size", self.object_size, self.N + 2)
        check_choice("object_kind", self.object_kind, OBJECT_KINDS)
        require(isinstance(self.image_name, str), "image_name", "a string", self.image_name)
        require(self.phase_image is None or isinstance(self.phase_image, str), "phase_image",
                 "a bundled image name or null", self.phase_image)
        for name in ("amplitude_range", "phase_range"):
            v = getattr(self, name)
            ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(is_num(x) for x in v) \
                and v[0] <= v[1]
            require(ok, name, "a pair (low, high) with low <= high", v)
            object.__setattr__(self, name, (float(v[0]), float(v[1])))
        require(self.amplitude_range[0] >= 0.0, "amplitude_range", "non-negative amplitudes",
                 self.amplitude_range)
        check_choice("probe_kind", self.probe_kind, PROBE_KINDS)
        check_num("probe_diameter", self.probe_diameter, 0.0, strict=True, optional=True)
        check_choice("scan", self.scan, SCAN_PATTERNS)
        check_num("overlap", self.overlap, 0.0)
        require(self.overlap < 0.95, "overlap", "a fraction in [0, 0.95)", self.overlap)
        check_num("jitter", self.jitter, 0.0)
        check_int("n_points", self.n_points, 1, optional=True)
        check_num("nphotons", self.nphotons, 0.0, strict=True)
        check_bool("poisson", self.poisson)
        check_int("seed", self.seed, 0)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["amplitude_range"] = list(self.amplitude_range)
        d["phase_range"] = list(self.phase_range)
        return d


RUN_SECTIONS = ("model", "training", "execution")
"""Sections of a training config file (:class:`RunConfig`)."""


@dataclass(frozen=True)
class RunConfig(ConfigBase):
    """Everything a training run needs, nested: model, training and execution (the schema of the config
    files of ``ptychopinn train --config`` and of ``--print-config``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, typ in (("model", ModelConfig), ("training", TrainingConfig),
                          ("execution", ExecutionConfig)):
            v = getattr(self, name)
            if isinstance(v, dict):
                object.__setattr__(self, name, typ.from_dict(v))
            elif not isinstance(v, typ):
                raise ConfigError(f"config field '{name}': expected {typ.__name__}, got {type(v).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "training": self.training.to_dict(),
                "execution": self.execution.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        return cls.from_dict(d)
