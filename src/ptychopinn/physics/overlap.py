"""The real-space overlap constraint for gridsize > 1.

A sample holds the C patches predicted for C neighbouring scan points. Where their central
(reliable) regions overlap on the object they must agree. :func:`enforce_overlap` places the C
patches, each weighted by the central ``N/2 x N/2`` window, on a small canvas per group at their
relative offsets, forms the weighted consensus ``sum w_i O_i / sum w_i`` and cuts every member back
out. The numerator and denominator use the same window (the reference warns that masking only the
denominator amplifies the periphery and makes a flat object optimal).

Geometry is the exact rule that simulation, stitching and refinement use
(:mod:`ptychopinn.physics.shift`): each member's position on the canvas splits into the nearest integer
window and a fraction in ``[-0.5, 0.5)``; the patch is moved onto the integer grid by a Fourier shift of
that fraction, placed and cut by integer index arithmetic, and moved back by the inverse shift. Nothing is
interpolated, so the constraint keeps every spatial frequency the network predicts (bilinear placement
and cutting would attenuate the highest by up to half at half-pixel offsets, a blur the physics loss
would then see at every step).

Difference from the reference design, and why: where no central window covers a pixel, the
reference returns zero there. Here each member keeps its own prediction at such pixels
(blend weight = coverage clipped to [0, 1]), so a set of already consistent patches passes through
*unchanged* (to round-off, for integer and sub-pixel offsets alike; tested) and the border regions that
the probe's side lobes illuminate are still represented by the network instead of being forced to zero.
"""

from __future__ import annotations

import math

import torch

from ptychopinn.physics.probe import central_window
from ptychopinn.physics.shift import fourier_shift, window_index


def enforce_overlap(patches: torch.Tensor, relative_offsets: torch.Tensor,
                    window: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Make the C member patches of every group consistent where their central regions overlap.

    ``patches``: ``[B, C, N, N]`` complex object patches, each centred on its own scan point.
    ``relative_offsets``: ``[B, C, 2]`` (x, y) pixels, member position minus group centre.
    ``window``: ``[N, N]`` float weight (default: 1 on the central N/2 x N/2).
    Returns ``[B, C, N, N]`` complex (dtype of ``patches``). For C == 1 the input is returned unchanged.
    """
    b, c, n, _ = patches.shape
    if c == 1:
        return patches
    dev = patches.device
    if window is None:
        window = central_window(n, device=dev)
    rel = relative_offsets.to(device=dev, dtype=torch.float64).reshape(b * c, 2)
    reach = float(rel.abs().max()) if rel.numel() else 0.0
    m = n + 2 * (math.ceil(reach) + 1)
    pos = rel + float(m // 2)
    # the rule of shift.split_positions, in torch so the offsets never leave the device
    nearest = torch.floor(pos + 0.5)
    corner = (nearest - n // 2).to(torch.int64)
    frac = pos - nearest
    member = torch.arange(b, device=dev).repeat_interleave(c)
    idx = (window_index(corner, n, m) + (member * (m * m))[:, None, None]).reshape(-1)

    flat = patches.reshape(b * c, n, n)
    shifted = bool((frac != 0).any())
    # content of each patch on the canvas's integer grid (the patch's own pixel N//2 sits at pos)
    moved = fourier_shift(flat, frac) if shifted else flat
    w = window.to(device=dev, dtype=flat.real.dtype).expand(b * c, n, n)
    num = flat.new_zeros(b * m * m).index_add(0, idx, (moved * w).reshape(-1))
    den = w.new_zeros(b * m * m).index_add(0, idx, w.reshape(-1))
    cover = den.clamp(0.0, 1.0)
    consensus = cover * (num / (den + eps))
    cut_cover = cover[idx].reshape(b * c, n, n)
    out = consensus[idx].reshape(b * c, n, n) + (1.0 - cut_cover) * moved
    if shifted:
        out = fourier_shift(out, -frac)
    return out.reshape(b, c, n, n)
