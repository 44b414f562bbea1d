"""Reference-named configuration dataclasses for ptychodus and legacy scripts.

These are *mutable*, picklable ``@dataclass`` classes with the reference system's field names and
defaults, because ptychodus 1.7.0 builds them with keyword arguments in its parent process, pickles them
into a child process and then assigns ``training_config.model.N = <pattern size>`` (it builds the
training config with ``N=0``). So construction validates nothing about ``N``; values are checked at the
boundary, when :func:`to_core_model`, :func:`to_core_training` or :func:`to_core_inference` turn them
into the frozen, validated :mod:`ptychopinn.config` classes that the core uses.

Differences from the reference defaults, and why:

* ``TrainingConfig.n_groups`` defaults to ``None`` = one training group per scan point. ptychodus never
  sets it; the reference turns ``None`` into 512 groups, which silently trains on a small subset of a
  large scan.
* ``TrainingConfig.output_dir`` / ``InferenceConfig.output_dir`` default to ``None``. ptychodus passes
  ``Path()`` placeholders; ``run_cdi_example`` then trains in a temporary directory instead of the
  current working directory (see :func:`usable_output_dir`).
* ``backend`` defaults to ``'pytorch'``, the only backend this package implements; ``'tensorflow'`` is
  refused at construction and again at use.

Importing this module is cheap: standard library plus :mod:`ptychopinn.config` (no torch).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ptychopinn import config as core
from ptychopinn.config_fields import is_int
from ptychopinn.errors import ConfigError

__all__ = [
    "KEY_MAPPINGS",
    "InferenceConfig",
    "ModelConfig",
    "TrainingConfig",
    "dataclass_to_legacy_dict",
    "to_core_inference",
    "to_core_model",
    "to_core_training",
    "update_legacy_dict",
    "usable_output_dir",
]

BACKENDS = ("pytorch",)

KEY_MAPPINGS: dict[str, str] = {
    "object_big": "object.big",
    "probe_big": "probe.big",
    "probe_mask": "probe.mask",
    "probe_trainable": "probe.trainable",
    "intensity_scale_trainable": "intensity_scale.trainable",
    "positions_provided": "positions.provided",
    "output_dir": "output_prefix",
    "train_data_file": "train_data_file_path",
    "test_data_file": "test_data_file_path",
}
"""Dataclass field name -> legacy ``params.cfg`` key, where the two differ."""

# The reference accepts 'silu' for the amplitude activation; it is the same function as 'swish'.
_ACTIVATION_ALIASES = {"silu": "swish"}


def check_backend(backend: object) -> None:
    """Raise :class:`ConfigError` unless ``backend`` is ``'pytorch'``."""
    if backend not in BACKENDS:
        raise ConfigError(
            f"backend: expected 'pytorch', found {backend!r}; this package implements the PyTorch backend "
            f"only; use backend=\"pytorch\""
        )


@dataclass
class ModelConfig:
    """Architecture and physics (reference names). Mutable; ``N=0`` is accepted until use.

    ``N``: diffraction pattern / patch side in pixels (32-256, a multiple of 8 when used).
    ``gridsize``: g, C = g*g patterns per group. ``model_type``: 'pinn' or 'supervised'.
    ``amp_activation``: 'sigmoid', 'swish' (alias 'silu'), 'softplus' or 'relu'.
    ``probe_scale``: the probe is normalised to energy ``(probe_scale * N / 4)**2``.
    ``gaussian_smoothing_sigma``: pixels (0 = off). ``probe_big``/``pad_object`` are accepted for
    compatibility; the core network always predicts the full N x N patch.
    """

    N: int = 64
    gridsize: int = 1
    n_filters_scale: int = 2
    model_type: str = "pinn"
    amp_activation: str = "sigmoid"
    object_big: bool = True
    probe_big: bool = True
    probe_mask: bool = False
    pad_object: bool = True
    probe_scale: float = 4.0
    gaussian_smoothing_sigma: float = 0.0


@dataclass
class TrainingConfig:
    """Training settings (reference names). Mutable and picklable.

    ``nphotons``: mean total photon count per pattern assumed by the Poisson likelihood (reference
    default 1e9; ptychodus sends its NumPhotons setting, 1e6 by default); ``None`` measures it from the
    training patterns, which is the real dose when they are photon counts. ``n_groups``: number of
    training groups; ``None`` (default) = one group per scan point. ``n_subsample``: first restrict the
    scan to this many random points (seeded by ``subsample_seed``; ``None`` seed = 42). ``neighbor_count``:
    K nearest neighbours a gridsize > 1 group is drawn from. Loss = ``nll_weight`` * Poisson
    + ``mae_weight`` * amplitude MAE + ``realspace_weight`` * ``realspace_mae_weight`` * object MAE.
    ``output_dir``: where training writes checkpoints and logs; ``None`` or ``Path('.')`` = a temporary
    directory. ``learning_rate``: Adam step size.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    train_data_file: Path | None = None
    test_data_file: Path | None = None
    batch_size: int = 16
    nepochs: int = 50
    mae_weight: float = 0.0
    nll_weight: float = 1.0
    realspace_mae_weight: float = 0.0
    realspace_weight: float = 0.0
    nphotons: float | None = 1e9
    n_groups: int | None = None
    n_subsample: int | None = None
    subsample_seed: int | None = None
    neighbor_count: int = 4
    enable_oversampling: bool = False
    sequential_sampling: bool = False
    positions_provided: bool = True
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    output_dir: Path | None = None
    learning_rate: float = 1e-3
    backend: str = "pytorch"

    def __post_init__(self) -> None:
        check_backend(self.backend)


@dataclass
class InferenceConfig:
    """Inference settings (reference names). The paths are informational; ptychodus passes placeholders.

    ``n_groups``/``n_subsample``/``subsample_seed`` are kept for scripts written for the reference;
    reconstruction here always uses every scan point (one group per point).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    model_path: Path | None = None
    test_data_file: Path | None = None
    n_groups: int | None = None
    n_subsample: int | None = None
    subsample_seed: int | None = None
    debug: bool = False
    output_dir: Path | None = None
    backend: str = "pytorch"

    def __post_init__(self) -> None:
        check_backend(self.backend)


# ------------------------------------------------------------------------------------ legacy dict
def dataclass_to_legacy_dict(obj: Any) -> dict[str, Any]:
    """Flatten a config dataclass (nested ``model`` first) into legacy ``params.cfg`` keys.

    Field names are renamed with :data:`KEY_MAPPINGS`, ``Path`` values become ``str`` and ``None``
    values are left out (so they never overwrite an existing entry).
    """
    if not is_dataclass(obj) or isinstance(obj, type):
        raise ConfigError(f"update_legacy_dict: expected a config dataclass instance, found "
                          f"{type(obj).__name__}; pass a ModelConfig, TrainingConfig or InferenceConfig")
    out: dict[str, Any] = {}
    nested = getattr(obj, "model", None)
    if is_dataclass(nested) and not isinstance(nested, type):
        out.update(dataclass_to_legacy_dict(nested))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "model" and is_dataclass(value):
            continue
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value)
        out[KEY_MAPPINGS.get(f.name, f.name)] = value
    return out


def update_legacy_dict(cfg: MutableMapping[str, Any], dataclass_obj: Any) -> None:
    """Write the fields of ``dataclass_obj`` into ``cfg`` (normally ``ptycho.params.cfg``) in place.

    See :func:`dataclass_to_legacy_dict` for the key mapping. Later code reads e.g. ``cfg['N']``,
    ``cfg['gridsize']``, ``cfg['object.big']``.
    """
    cfg.update(dataclass_to_legacy_dict(dataclass_obj))


# ------------------------------------------------------------------------------ core conversion
def usable_output_dir(path: Path | str | None) -> Path | None:
    """``path`` as a Path, or None when it is unset or a placeholder (``''``/``'.'``) that would
    otherwise make training write into the current working directory."""
    if path is None:
        return None
    p = Path(path)
    return None if str(p) in ("", ".") else p


def to_core_model(model: ModelConfig, *, probe_trainable: bool = False,
                  intensity_scale_trainable: bool = False) -> core.ModelConfig:
    """Validated core :class:`ptychopinn.config.ModelConfig` from a reference-named one.

    Raises:
        ConfigError: ``N`` unset (0) or any field out of range (one-line message naming it).
    """
    if not isinstance(model, ModelConfig):
        raise ConfigError(f"model: expected ptycho.config.config.ModelConfig, found {type(model).__name__}; "
                          f"build one with ModelConfig(N=..., gridsize=...)")
    if is_int(model.N) and model.N <= 0:
        raise ConfigError(f"ModelConfig.N: expected the diffraction pattern size in pixels (e.g. 64), found "
                          f"{model.N}; set config.model.N = diff3d.shape[-1] before training or inference")
    activation = _ACTIVATION_ALIASES.get(model.amp_activation, model.amp_activation)
    return core.ModelConfig(
        N=model.N,
        gridsize=model.gridsize,
        generator=core.REFERENCE_GENERATOR,
        n_filters_scale=model.n_filters_scale,
        model_type=model.model_type,
        amp_activation=activation,
        object_big=model.object_big,
        probe_big=model.probe_big,
        probe_mask=model.probe_mask,
        pad_object=model.pad_object,
        probe_scale=float(model.probe_scale),
        gaussian_smoothing_sigma=float(model.gaussian_smoothing_sigma),
        probe_trainable=probe_trainable,
        intensity_scale_trainable=intensity_scale_trainable,
    )


def to_core_training(config: TrainingConfig) -> tuple[core.ModelConfig, core.TrainingConfig]:
    """Core ``(ModelConfig, TrainingConfig)`` for a reference-named :class:`TrainingConfig`.

    ``probe_trainable`` and ``intensity_scale_trainable`` move to the core model config;
    ``subsample_seed=None`` becomes the core default seed (42) so runs are reproducible; the output
    directory is handled by the caller (the core config gets none).
    """
    if not isinstance(config, TrainingConfig):
        raise ConfigError(f"config: expected ptycho.config.config.TrainingConfig, found "
                          f"{type(config).__name__}; build one with TrainingConfig(model=ModelConfig(...))")
    check_backend(config.backend)
    model = to_core_model(config.model, probe_trainable=config.probe_trainable,
                          intensity_scale_trainable=config.intensity_scale_trainable)
    defaults = core.TrainingConfig()
    training = core.TrainingConfig(
        batch_size=config.batch_size,
        nepochs=config.nepochs,
        nphotons=None if config.nphotons is None else float(config.nphotons),
        nll_weight=float(config.nll_weight),
        mae_weight=float(config.mae_weight),
        realspace_weight=float(config.realspace_weight),
        realspace_mae_weight=float(config.realspace_mae_weight),
        n_groups=config.n_groups,
        n_subsample=config.n_subsample,
        subsample_seed=defaults.subsample_seed if config.subsample_seed is None else config.subsample_seed,
        neighbor_count=config.neighbor_count,
        sequential_sampling=config.sequential_sampling,
        enable_oversampling=config.enable_oversampling,
        learning_rate=float(config.learning_rate),
    )
    return model, training


def to_core_inference(config: InferenceConfig | None = None, *,
                      stitch_window: int | None = None) -> core.InferenceConfig:
    """Core :class:`ptychopinn.config.InferenceConfig` (batching and stitch window) for inference."""
    if config is not None:
        if not isinstance(config, InferenceConfig):
            raise ConfigError(f"config: expected ptycho.config.config.InferenceConfig, found "
                              f"{type(config).__name__}; build one with InferenceConfig(model=ModelConfig(...))")
        check_backend(config.backend)
    return core.InferenceConfig.reference(stitch_window=stitch_window)
