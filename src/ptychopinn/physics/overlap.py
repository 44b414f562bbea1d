"""The real-space overlap constraint for gridsize > 1.

A sample holds the C patches predicted for C neighbouring scan points. Where their central
(reliable) regions overlap on the object they must agree. :func:`enforce_overlap` places the C
patches, each weighted by the central ``N/2 x N/2`` window, on a small canvas per group at their
relative offsets, forms the weighted consensus ``sum w_i O_i / sum w_i`` and cuts every member back
out. The numerator and denominator use the same window (the reference warns that masking only the
denominator amplifies the periphery and makes a flat object optimal).

Difference from the reference design, and why: where no central window covers a pixel, the
reference returns zero there. Here each member keeps its own prediction at such pixels
(blend weight = coverage clipped to [0, 1], blended on the canvas before resampling), so a set of
already consistent patches passes through *unchanged* (exactly for integer offsets, to bilinear
interpolation error for sub-pixel ones; tested) and the border regions that the probe's side lobes illuminate are still
represented by the network instead of being forced to zero.
"""

from __future__ import annotations

import math

import torch

from ptychopinn.physics.patches import extract_patches, place_patches
from ptychopinn.physics.probe import central_window


def enforce_overlap(patches: torch.Tensor, relative_offsets: torch.Tensor,
                    window: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Make the C member patches of every group consistent where their central regions overlap.

    ``patches``: ``[B, C, N, N]`` complex object patches, each centred on its own scan point.
    ``relative_offsets``: ``[B, C, 2]`` (x, y) pixels, member position minus group centre.
    ``window``: ``[N, N]`` float weight (default: 1 on the central N/2 x N/2).
    Returns ``[B, C, N, N]`` complex. For C == 1 the input is returned unchanged.
    """
    b, c, n, _ = patches.shape
    if c == 1:
        return patches
    if window is None:
        window = central_window(n, device=patches.device)
    rel = relative_offsets.to(torch.float64).reshape(b * c, 2)
    reach = float(rel.abs().max()) if rel.numel() else 0.0
    m = n + 2 * (math.ceil(reach) + 1)
    centre = torch.tensor([m // 2, m // 2], dtype=torch.float64, device=patches.device)
    pos = centre[None, :] + rel
    idx = torch.arange(b, device=patches.device).repeat_interleave(c)
    flat = patches.reshape(b * c, n, n)
    w = window.to(flat.real.dtype).expand(b * c, n, n)
    num = place_patches(flat * w, pos, (b, m, m), idx)
    den = place_patches(w, pos, (b, m, m), idx)
    cover = den.clamp(0.0, 1.0)
    # Blend on the canvas, then resample: out = extract(cover * consensus) + (1 - extract(cover)) * own.
    # The bilinear weights of both terms sum to one, so a consistent set passes through for sub-pixel
    # offsets too. (Resampling the consensus alone and multiplying by the resampled cover mixes in
    # the zeros beyond the covered region: consistent patches lost up to ~25% of their value in a
    # one-pixel band around it.) For integer offsets both forms are the same slice arithmetic.
    blended = extract_patches(cover * (num / (den + eps)), pos, n, idx)
    out = blended + (1.0 - extract_patches(cover, pos, n, idx)) * flat
    return out.reshape(b, c, n, n)
