"""The PINN module: a generator network followed by the ptychographic forward model.

``PtychoPINN`` maps normalised diffraction amplitudes ``x`` ``[B, C, N, N]`` float32 (the data module
normalises them to a mean pattern energy of ``(N/2)**2``; this module never renormalises) to complex
object patches, enforces overlap consistency between the C members of a group (gridsize > 1 with
``object_big``), and predicts the far-field amplitudes with :class:`ForwardModel`. The training loss
is built outside the model (:mod:`ptychopinn.training.losses`): it compares predicted and measured
amplitudes through the Poisson likelihood at the photon scale ``s`` (``intensity_scale``), so no ground truth is needed
(``model_type='pinn'``); ``'supervised'`` trains on ground-truth patches instead.

Intensity scale. ``s`` turns normalised amplitudes into photon-count amplitudes. The module keeps
the data's scale ``s0`` (given at construction, fixed) and a model scale ``s = exp(log_intensity_scale)``
(a parameter, trainable iff ``intensity_scale_trainable``; otherwise a buffer so it can never
move). The expected counts are ``(s * pred)**2`` and the measured counts ``(s0 * x)**2``, i.e. a
trained ``s`` acts as a global gain ``s / s0`` on the predicted amplitude (as in the reference TF
model, where the learned scale multiplies only the prediction). The normalised Poisson deviance is
invariant to a common scale of both, so a gain is the only way ``s`` can matter. Both scales are in
the state dict, so a reloaded model is complete.

Precision: the generator may run under bf16 autocast; the overlap step and the physics always run
in float32/complex64 (the generators return complex64, :class:`ForwardModel` disables autocast).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.models.registry import build_generator
from ptychopinn.physics.forward import ForwardModel
from ptychopinn.physics.overlap import enforce_overlap


class PtychoPINN(nn.Module):
    """Generator + physics. ``model_type`` 'pinn' (physics loss) or 'supervised' (ground-truth patches).

    ``probe``: ``[N, N]`` complex probe on the object pixel grid (any scale; normalised by
    :class:`ForwardModel` to energy ``(probe_scale * N / 4)**2``). ``intensity_scale``: ``s0 > 0``,
    photon scale of the training data, ``sqrt(nphotons) / (N/2)`` (dimensionless).

    State dict: generator weights, ``physics.probe`` and ``physics.mask``, ``log_intensity_scale``
    and ``log_data_intensity_scale`` (everything inference needs besides the config).
    """

    log_intensity_scale: torch.Tensor
    log_data_intensity_scale: torch.Tensor

    def __init__(self, config: ModelConfig, probe: torch.Tensor | np.ndarray, intensity_scale: float) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"PtychoPINN: expected a ModelConfig, got {type(config).__name__}; "
                              "build one with ptychopinn.config.ModelConfig(...)")
        s0 = float(intensity_scale)
        if not (math.isfinite(s0) and s0 > 0):
            raise ConfigError(f"intensity_scale: expected a finite number > 0, got {intensity_scale!r}; "
                              "use sqrt(nphotons) / (N/2)")
        probe_t = torch.as_tensor(probe)
        if probe_t.shape != (config.N, config.N):
            raise DataFormatError(f"probe: expected shape ({config.N}, {config.N}) matching N={config.N}, got "
                                  f"{describe_array(probe_t)}; pass the probe on the N x N patch grid")
        self.config = config
        self.generator = build_generator(config.generator, config)
        self.physics = ForwardModel(probe_t.to(torch.complex64), probe_scale=config.probe_scale,
                                    probe_mask=config.probe_mask,
                                    gaussian_smoothing_sigma=config.gaussian_smoothing_sigma,
                                    probe_trainable=config.probe_trainable)
        log_s = torch.tensor(math.log(s0), dtype=torch.float32)
        if config.intensity_scale_trainable:
            self.log_intensity_scale = nn.Parameter(log_s.clone())
        else:
            self.register_buffer("log_intensity_scale", log_s.clone())
        self.register_buffer("log_data_intensity_scale", log_s.clone())

    @property
    def N(self) -> int:
        """Patch / detector side in pixels."""
        return self.config.N

    @property
    def channels(self) -> int:
        """C = gridsize**2 patterns per sample."""
        return self.config.channels

    @property
    def intensity_scale(self) -> torch.Tensor:
        """Model photon scale ``s = exp(log_intensity_scale)``, 0-d float32 tensor."""
        return self.log_intensity_scale.exp()

    @property
    def data_intensity_scale(self) -> torch.Tensor:
        """Fixed photon scale ``s0`` of the training data, 0-d float32 tensor."""
        return self.log_data_intensity_scale.exp()

    def amplitude_gain(self) -> torch.Tensor:
        """``s / s0`` (0-d float32): the factor a trained intensity scale applies to predictions."""
        return (self.log_intensity_scale - self.log_data_intensity_scale).exp()

    def _check_inputs(self, x: torch.Tensor, relative_offsets: torch.Tensor) -> None:
        n, c = self.N, self.channels
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, n, n):
            raise DataFormatError(f"diffraction input: expected [B, {c}, {n}, {n}] (C = gridsize**2), got "
                                  f"{describe_array(x)}; group the data with the model's gridsize and N")
        if tuple(relative_offsets.shape) != (x.shape[0], c, 2):
            raise DataFormatError(f"relative_offsets: expected [{x.shape[0]}, {c}, 2] (x, y pixels), got "
                                  f"{describe_array(relative_offsets)}; pass one offset pair per group member")

    def predict_patches(self, x: torch.Tensor, relative_offsets: torch.Tensor) -> torch.Tensor:
        """Object patches ``[B, C, N, N]`` complex64 for inputs ``x`` ``[B, C, N, N]`` float32.

        ``relative_offsets``: ``[B, C, 2]`` (x, y) pixels, member position minus group centre.
        With gridsize > 1 and ``object_big`` the C patches are made consistent where their central
        regions overlap (:func:`enforce_overlap`); otherwise they are the generator's output.
        """
        self._check_inputs(x, relative_offsets)
        obj = self.generator(self.generator_input(x, relative_offsets)).to(torch.complex64)
        if self.channels > 1 and self.config.object_big:
            with torch.autocast(device_type=_autocast_device(obj), enabled=False):
                obj = enforce_overlap(obj, relative_offsets)
        return obj

    def generator_input(self, x: torch.Tensor, relative_offsets: torch.Tensor) -> torch.Tensor:
        """``x``, or with ``offset_channels`` ``[B, 3C, N, N]``: ``x`` then constant maps of every member's x and
        y offset in units of N. A group's neighbours are drawn at random, so its geometry differs from group
        to group; without the maps the generator cannot know where the patches it must make agree lie."""
        if self.config.input_channels == self.channels:
            return x
        n = float(self.N)
        rel = (relative_offsets.to(x.dtype) / n)[..., None, None].expand(*relative_offsets.shape, self.N, self.N)
        return torch.cat([x, rel[:, :, 0], rel[:, :, 1]], dim=1)

    def forward(self, x: torch.Tensor, relative_offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches and predicted amplitudes.

        Returns ``(obj [B, C, N, N] complex64, pred_amp [B, C, N, N] float32)``; ``pred_amp`` is
        ``ForwardModel(obj)`` in normalised amplitude units (no gain applied; see
        :meth:`amplitude_gain`).
        """
        obj = self.predict_patches(x, relative_offsets)
        return obj, self.physics(obj)


def _autocast_device(t: torch.Tensor) -> str:
    return t.device.type if t.device.type in ("cpu", "cuda") else "cpu"
