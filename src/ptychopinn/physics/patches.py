"""Patch extraction from images and placement back: an exact adjoint pair with sub-pixel positions.

Geometry (used everywhere in ptychopinn): a patch of size ``(h, w)`` *centred* at position
``(x, y)`` (x = column, y = row, in pixels of the image) has its pixel ``(h//2, w//2)`` on image
point ``(y, x)``; patch pixel ``(r, c)`` samples the image at ``(y - h//2 + r, x - w//2 + c)``.
Non-integer positions are sampled bilinearly. Image pixels outside the image read as zero, and
placement drops what falls outside, so :func:`place_patches` is exactly the adjoint (transpose) of
:func:`extract_patches` for every position, in or out of bounds:
``<extract(I), P> == <I, place(P)>`` (real inner product of real and imaginary parts).

Both functions act on a *stack* of images ``[K, H, W]``: ``image_index`` says which image each
patch belongs to, so the same code stitches one large canvas (K = 1) and merges the C patches of
many groups on their own small canvases (K = B). Everything is differentiable with respect to the
pixel values (not the positions) and runs as a few gather/scatter kernels with no Python loop
over patches.
"""

from __future__ import annotations

import torch


def _sampling_grid(
    positions: torch.Tensor, size: tuple[int, int], image_shape: tuple[int, int, int],
    image_index: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat indices of each patch's ``(h+1, w+1)`` integer window, its validity mask and weights.

    Returns ``(flat_index [P, h+1, w+1] int64, valid [P, h+1, w+1] bool, fy [P,1,1], fx [P,1,1])``
    where ``fx, fy`` (float64) are the fractional parts of the window's top-left corner.
    """
    h, w = size
    k, height, width = image_shape
    pos = positions.to(torch.float64)
    x0 = pos[:, 0] - (w // 2)
    y0 = pos[:, 1] - (h // 2)
    c0 = torch.floor(x0)
    r0 = torch.floor(y0)
    # Fractions stay float64 here; each caller casts them to the data's precision (rounding them
    # to float32 first would cap float64 sampling at ~1e-7 relative error).
    fx = (x0 - c0)[:, None, None]
    fy = (y0 - r0)[:, None, None]
    dev = positions.device
    rows = r0.to(torch.int64)[:, None] + torch.arange(h + 1, device=dev)
    cols = c0.to(torch.int64)[:, None] + torch.arange(w + 1, device=dev)
    valid = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    rows = rows.clamp(0, height - 1)
    cols = cols.clamp(0, width - 1)
    if image_index is None:
        base = torch.zeros(rows.shape[0], dtype=torch.int64, device=dev)
    else:
        base = image_index.to(device=dev, dtype=torch.int64)
        if base.numel() and (int(base.min()) < 0 or int(base.max()) >= k):
            raise IndexError(f"image_index must lie in [0, {k - 1}]")
    flat = ((base[:, None] * height + rows)[:, :, None]) * width + cols[:, None, :]
    return flat, valid, fy, fx


def extract_patches(
    images: torch.Tensor, positions: torch.Tensor, size: int | tuple[int, int],
    image_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cut patches centred at (sub-pixel) positions out of a stack of images.

    ``images``: ``[K, H, W]`` (or ``[H, W]``) real or complex. ``positions``: ``[P, 2]`` (x, y) in
    pixels of the images. ``size``: patch side ``N`` or ``(h, w)``. ``image_index``: ``[P]`` int,
    which image each patch is cut from (default all from image 0).
    Returns ``[P, h, w]`` with the dtype of ``images``.
    """
    if images.dim() == 2:
        images = images[None]
    h, w = (size, size) if isinstance(size, int) else size
    k, ih, iw = images.shape
    flat, valid, fy, fx = _sampling_grid(positions, (h, w), (k, ih, iw), image_index)
    win = images.reshape(-1)[flat]
    win = win * valid.to(win.real.dtype if win.is_complex() else win.dtype)
    if images.is_complex():
        fx, fy = fx.to(images.real.dtype), fy.to(images.real.dtype)
    else:
        fx, fy = fx.to(images.dtype), fy.to(images.dtype)
    top = win[:, :-1, :-1] * (1 - fx) + win[:, :-1, 1:] * fx
    bottom = win[:, 1:, :-1] * (1 - fx) + win[:, 1:, 1:] * fx
    return top * (1 - fy) + bottom * fy


def place_patches(
    patches: torch.Tensor, positions: torch.Tensor, image_shape: tuple[int, int] | tuple[int, int, int],
    image_index: torch.Tensor | None = None, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Add patches into a stack of images at (sub-pixel) positions: the adjoint of extraction.

    ``patches``: ``[P, h, w]`` real or complex. ``positions``: ``[P, 2]`` (x, y) pixels.
    ``image_shape``: ``(H, W)`` or ``(K, H, W)``. ``image_index``: ``[P]`` int target image.
    ``out``: optional ``[K, H, W]`` accumulator to add into in place (streaming stitching).
    Returns ``[K, H, W]`` (``[H, W]`` if a 2-D shape was given and ``out`` is None).
    """
    squeeze = len(image_shape) == 2 and out is None
    shape3 = (1, *image_shape) if len(image_shape) == 2 else image_shape
    p, h, w = patches.shape
    flat, valid, fy, fx = _sampling_grid(positions, (h, w), shape3, image_index)
    real_dtype = patches.real.dtype if patches.is_complex() else patches.dtype
    fx, fy = fx.to(real_dtype), fy.to(real_dtype)
    # Spread each pixel over its 2x2 neighbourhood separably (columns, then rows) into preallocated
    # windows: half the multiplies of the four-corner form and no zero-padded copies.
    cols = patches.new_empty((p, h, w + 1))
    cols[:, :, :w] = patches * (1 - fx)
    cols[:, :, w] = 0
    cols[:, :, 1:] += patches * fx
    win = patches.new_empty((p, h + 1, w + 1))
    win[:, :h] = cols * (1 - fy)
    win[:, h] = 0
    win[:, 1:] += cols * fy
    win = win * valid.to(real_dtype)
    if out is not None:
        out.view(-1).index_add_(0, flat.reshape(-1), win.reshape(-1).to(out.dtype))
        return out
    acc = patches.new_zeros(shape3[0] * shape3[1] * shape3[2])
    acc = acc.index_add(0, flat.reshape(-1), win.reshape(-1))
    acc = acc.reshape(shape3)
    return acc[0] if squeeze else acc

