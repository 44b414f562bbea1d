"""``InferenceModel``: the object ``load_inference_bundle`` returns, with a Keras-like ``predict``.

``predict([X, local_offsets])`` takes and returns numpy arrays in the reference layouts:

* ``X``: ``[B, N, N, C]`` float amplitudes, channels last, in *any* overall scale. ptychodus passes
  ``container.X * intensity_scale``; the input is renormalised by its own statistics (mean per-pattern
  energy ``(N/2)**2``, the training rule), which makes that product irrelevant. Pass the whole scan in
  one call: the statistics are those of the array given.
* ``local_offsets``: ``[B, 1, 2, C]`` (x, y) pixels with the reference sign ``-(member - centre)``.
* output: ``[B, N, N, 1]`` complex64 object patches centred on the group centre. For C = 1 this is the
  network's patch. For C > 1 the C member patches are merged on an ``N x N`` canvas centred on the group
  centre, each at its relative offset, weighting each member's central ``N/2 x N/2`` region fully (and
  its border by 1e-3, so pixels only a border reaches are still filled), and averaging where they
  overlap: the reference's group-centred ``trimmed_obj`` that ``reassemble_position`` stitches at
  ``global_offsets``. Members are moved exactly (Fourier shift of the fraction of a pixel, placement at
  the nearest whole pixel), as in stitching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ptycho._arrays import to_numpy
from ptycho.raw_data import LOCAL_OFFSET_SIGN
from ptychopinn.data.normalize import mean_pattern_energy
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.models.pinn import PtychoPINN
from ptychopinn.physics.probe import central_window
from ptychopinn.runtime import resolve_device

__all__ = ["BORDER_WEIGHT", "InferenceModel", "merge_members"]

BORDER_WEIGHT = 1e-3
"""Merge weight of a member patch outside its central ``N/2 x N/2`` region (inside it: 1)."""


def merge_members(patches: torch.Tensor, relative_offsets: torch.Tensor) -> torch.Tensor:
    """Group-centred merged patches ``[B, N, N]`` complex64 from member patches ``[B, C, N, N]`` complex
    and relative offsets ``[B, C, 2]`` (x, y) px (member - centre). Pixels no member reaches are 0.

    Member ``c`` is moved to ``N//2 + offset`` exactly: the whole patch is Fourier-shifted by the fraction
    of a pixel (:func:`~ptychopinn.inference.stitch.shifted_windows`) and added at the nearest whole pixel,
    weighted by :func:`~ptychopinn.physics.probe.central_window` ``+ BORDER_WEIGHT`` placed at that pixel.
    """
    from ptychopinn.inference.stitch import shifted_windows
    from ptychopinn.physics.shift import split_positions

    b, c, n, _ = patches.shape
    dev = patches.device
    pos = n // 2 + relative_offsets.reshape(b * c, 2).detach().to("cpu", torch.float64).numpy()
    corner, frac = split_positions(pos, n)
    flat = shifted_windows(patches.reshape(b * c, n, n).to(torch.complex64), torch.from_numpy(frac), n)
    weight = (central_window(n, device=dev) + BORDER_WEIGHT).expand(b * c, n, n)
    corner_t = torch.from_numpy(corner).to(dev)
    span = torch.arange(n, device=dev)
    rows = corner_t[:, 1, None] + span  # [B*C, N] rows of the group canvas
    cols = corner_t[:, 0, None] + span
    valid = ((rows >= 0) & (rows < n))[:, :, None] & ((cols >= 0) & (cols < n))[:, None, :]
    group = torch.arange(b, device=dev).repeat_interleave(c)
    idx = ((group[:, None, None] * n + rows.clamp(0, n - 1)[:, :, None]) * n + cols.clamp(0, n - 1)[:, None, :])
    num = torch.zeros(b * n * n, dtype=torch.complex64, device=dev)
    den = torch.zeros(b * n * n, dtype=torch.float32, device=dev)
    num.index_add_(0, idx.reshape(-1), (flat * weight * valid).reshape(-1))
    den.index_add_(0, idx.reshape(-1), (weight * valid).reshape(-1))
    num, den = num.reshape(b, n, n), den.reshape(b, n, n)
    covered = den > 1e-9
    return torch.where(covered, num / torch.where(covered, den, torch.ones_like(den)), torch.zeros_like(num))


class InferenceModel:
    """A trained :class:`PtychoPINN` behind the reference ``predict`` interface (see module docstring).

    Attributes: ``model`` (the core module, eval mode), ``N``, ``gridsize``, ``intensity_scale`` (float,
    the trained photon scale), ``batch_size`` (groups per forward pass), ``device``.
    """

    def __init__(self, model: PtychoPINN, *, batch_size: int = 64, device: str | torch.device | None = None) -> None:
        if not isinstance(model, PtychoPINN):
            raise ConfigError(f"InferenceModel: expected a ptychopinn PtychoPINN, found {type(model).__name__}; "
                              f"load one with ptycho.workflows.components.load_inference_bundle")
        self.model = model.eval()
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)

    @property
    def N(self) -> int:  # noqa: N802 - reference name
        return self.model.config.N

    @property
    def gridsize(self) -> int:
        return self.model.config.gridsize

    @property
    def intensity_scale(self) -> float:
        return float(self.model.intensity_scale.detach().cpu())

    def _inputs(self, inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)) and len(inputs) == 2:
            x, off = to_numpy(inputs[0]), to_numpy(inputs[1])
        else:
            x, off = to_numpy(inputs), None
        n, c = self.N, self.model.channels
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[1:3] != (n, n):
            raise DataFormatError(f"predict: X must be (B, {n}, {n}, C) amplitudes (channels last), found "
                                  f"{describe_array(x)}; pass container.X")
        if x.shape[-1] != c:
            raise ConfigError(f"predict: the model was trained with gridsize {self.gridsize} (C={c}) but X has "
                              f"C={x.shape[-1]} channels; group the data with gridsize={self.gridsize} (ptychodus: "
                              f"set PtychoPINN GridSize to {self.gridsize})")
        if off is None:
            if c != 1:
                raise DataFormatError(f"predict: gridsize {self.gridsize} needs [X, local_offsets]; found X only; "
                                      f"pass [container.X, container.local_offsets]")
            off = np.zeros((x.shape[0], 1, 2, 1), np.float32)
        if off.shape not in ((x.shape[0], 1, 2, c), (x.shape[0], 2, c)):
            raise DataFormatError(f"predict: local_offsets must be ({x.shape[0]}, 1, 2, {c}), found "
                                  f"{describe_array(off)}; pass container.local_offsets")
        # [B, 1, 2, C] reference sign -> [B, C, 2] member - centre
        rel = LOCAL_OFFSET_SIGN * np.swapaxes(off.reshape(x.shape[0], 2, c), 1, 2)
        return x, rel.astype(np.float32)

    def predict(self, inputs: Any, batch_size: int | None = None, verbose: int = 0, **_: Any) -> np.ndarray:
        """``[B, N, N, 1]`` complex64 group-centred object patches for ``[X, local_offsets]``.

        ``batch_size`` overrides the groups per forward pass; ``verbose`` and other Keras keywords are
        accepted and ignored.
        """
        del verbose
        x, rel = self._inputs(inputs)
        b, n, _, c = x.shape
        stacked = np.moveaxis(x, -1, 1).reshape(b * c, n, n)
        energy = mean_pattern_energy(stacked)
        if not (energy > 0 and math.isfinite(energy)):
            raise DataFormatError("predict: X is all zeros or not finite; pass the diffraction amplitudes")
        scale = math.sqrt((n / 2) ** 2 / energy)
        step = self.batch_size if batch_size is None else int(batch_size)
        if step < 1:
            raise ConfigError(f"batch_size: expected a positive integer, found {batch_size!r}; use e.g. 64")
        out = np.empty((b, n, n, 1), dtype=np.complex64)
        model = self.model.to(self.device)
        with torch.inference_mode():
            for start in range(0, b, step):
                xb = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x[start:start + step], -1, 1),
                                                           dtype=np.float32)).to(self.device)
                rb = torch.from_numpy(rel[start:start + step]).to(self.device)
                patches = model.predict_patches(xb * scale, rb)
                merged = patches[:, 0] if c == 1 else merge_members(patches, rb)
                out[start:start + step, ..., 0] = merged.to(torch.complex64).cpu().numpy()
        return out

    __call__ = predict

    def __repr__(self) -> str:
        return f"InferenceModel(N={self.N}, gridsize={self.gridsize}, intensity_scale={self.intensity_scale:.4g})"
