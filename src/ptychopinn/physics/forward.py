"""The forward model: object patches -> far-field amplitudes. One module serves simulation, the
training loss and every physics check.

Pipeline for a batch of object patches ``O`` ``[B, C, N, N]`` complex64:

1. (gridsize > 1, ``object_big``) overlap constraint between the C members
   (:func:`ptychopinn.physics.overlap.enforce_overlap`), done by the PINN module, not here;
2. illumination ``psi = P * O`` with the normalised probe ``P`` (:func:`normalize_probe`),
   optionally times the central disk mask (``probe_mask``) and followed by a complex Gaussian
   blur (``gaussian_smoothing_sigma`` pixels);
3. far-field amplitude ``A = |fft2c(psi)|`` (centred, orthonormal; Parseval holds).

The output is in *normalised* amplitude units, the units of the network input; multiply by the
intensity scale to get photon-count amplitudes. The physics always runs in float32/complex64,
even inside a bf16 autocast region, because FFTs of half-precision data lose the dynamic range
of diffraction patterns.
"""

from __future__ import annotations

import torch
from torch import nn

from ptychopinn.physics.fft import far_field_amplitude
from ptychopinn.physics.probe import central_disk, gaussian_smooth, normalize_probe


class ForwardModel(nn.Module):
    """Probe illumination and far-field propagation.

    ``probe``: ``[N, N]`` complex probe on the object pixel grid (any scale; it is normalised
    to total energy ``(probe_scale * N / 4)**2``). The normalised probe is a buffer (saved in the
    state dict, moved with ``.to()``) or, with ``probe_trainable``, a parameter.
    """

    probe: torch.Tensor
    mask: torch.Tensor

    def __init__(self, probe: torch.Tensor, *, probe_scale: float = 4.0, probe_mask: bool = False,
                 gaussian_smoothing_sigma: float = 0.0, probe_trainable: bool = False) -> None:
        super().__init__()
        probe = torch.as_tensor(probe)
        if probe.dim() != 2 or probe.shape[0] != probe.shape[1]:
            raise ValueError(f"probe must be a square [N, N] array, got shape {tuple(probe.shape)}")
        p = normalize_probe(probe.to(torch.complex64), probe_scale)
        if probe_trainable:
            self.probe = nn.Parameter(p)
        else:
            self.register_buffer("probe", p)
        n = p.shape[-1]
        self.register_buffer("mask", central_disk(n) if probe_mask else torch.ones(n, n))
        self.sigma = float(gaussian_smoothing_sigma)

    @property
    def N(self) -> int:
        return int(self.probe.shape[-1])

    def illuminate(self, obj: torch.Tensor) -> torch.Tensor:
        """Exit waves ``[B, C, N, N]`` complex64 of object patches ``[B, C, N, N]`` complex."""
        psi = obj.to(torch.complex64) * (self.probe * self.mask)
        return gaussian_smooth(psi, self.sigma)

    def forward(self, obj: torch.Tensor) -> torch.Tensor:
        """Far-field amplitudes ``[B, C, N, N]`` float32 (normalised units) of object patches."""
        device_type = obj.device.type if obj.device.type in ("cpu", "cuda") else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return far_field_amplitude(self.illuminate(obj))
