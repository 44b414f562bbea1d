"""The ``'unet'`` generator: few channels at full resolution, skip connections, one shared decoder.

Design (for speed on CPUs and for detail):

* **Space-to-depth in, depth-to-space out.** The ``[B, C, N, N]`` input is rearranged losslessly into
  ``[B, 4C, N/2, N/2]`` (``pixel_unshuffle``) and the outputs are produced at ``N/2`` with 4 channels per
  map and rearranged back (``pixel_shuffle``): no convolution runs at full resolution, where the
  ``'cnn'`` generator spends most of its work.
* **U-Net.** Two conv-pool levels (``N/2 -> N/4 -> N/8``), a bottleneck, and two up levels whose input
  is the upsampled features concatenated with the encoder features of the same resolution (skip
  connections carry fine detail past the bottleneck). Widths ``w, 2w, 4w`` with ``w = 16 *
  n_filters_scale``.
* **Heads.** One 3x3 convolution per output (amplitude, phase) to ``4C`` channels at ``N/2``, then
  ``pixel_shuffle``; amplitude through ``amp_activation``, phase ``pi * tanh``. With ``pad_object`` and
  not ``probe_big`` the object is confined to the central ``N/2 x N/2`` (0 outside), as for ``'cnn'``;
  otherwise the whole patch is predicted.

Cost: :func:`~ptychopinn.models.cnn.forward_flops` counts it; the README has speed and quality beside
``'cnn'``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptychopinn.config import ModelConfig
from ptychopinn.models.cnn import (
    _AMP_ACTIVATIONS,
    CBAM,
    DoubleConv,
    _phase_activation,
    init_generator,
    inverse_amp_activation,
)
from ptychopinn.models.registry import register_generator


@register_generator("unet")
class UNetGenerator(nn.Module):
    """``forward(x)``: ``x`` ``[B, C, N, N]`` float32 normalised amplitudes -> ``[B, C, N, N]`` complex64
    object patches ``a * exp(i phi)``, ``a >= 0``, ``phi`` in ``(-pi, pi)``. N must be a multiple of 8."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n, c = config.N, config.channels
        w = 16 * config.n_filters_scale
        self.N, self.channels, self.input_channels = n, c, config.input_channels
        self.enc1 = DoubleConv(4 * config.input_channels, w)
        self.enc2 = DoubleConv(w, 2 * w)
        self.bottom = DoubleConv(2 * w, 4 * w)
        self.dec2 = DoubleConv(4 * w + 2 * w, 2 * w)
        self.dec1 = DoubleConv(2 * w + w, w)
        self.attention = nn.ModuleList([CBAM(w), CBAM(2 * w)]) if config.cbam_encoder else None
        self.head_amp = nn.Conv2d(w, 4 * c, kernel_size=3, padding=1)
        self.head_phase = nn.Conv2d(w, 4 * c, kernel_size=3, padding=1)
        self.amp_activation = _AMP_ACTIVATIONS[config.amp_activation]
        if config.pad_object and not config.probe_big:
            support = torch.zeros(n, n)
            support[n // 4: n // 4 + n // 2, n // 4: n // 4 + n // 2] = 1.0
            self.register_buffer("support", support, persistent=False)
        else:
            self.support = None
        init_generator(self, [self.head_amp], inverse_amp_activation(config.amp_activation, 2.0 / config.probe_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(F.pixel_unshuffle(x, 2))  # [B, w, N/2, N/2]
        if self.attention is not None:
            e1 = self.attention[0](e1)
        e2 = self.enc2(F.max_pool2d(e1, 2))  # [B, 2w, N/4, N/4]
        if self.attention is not None:
            e2 = self.attention[1](e2)
        b = self.bottom(F.max_pool2d(e2, 2))  # [B, 4w, N/8, N/8]
        d2 = self.dec2(torch.cat([F.interpolate(b, scale_factor=2.0, mode="nearest"), e2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], dim=1))
        amp = self.amp_activation(F.pixel_shuffle(self.head_amp(d1).float(), 2))
        phase = _phase_activation(F.pixel_shuffle(self.head_phase(d1).float(), 2))
        if self.support is not None:
            amp = amp * self.support
        return torch.polar(amp, phase)
