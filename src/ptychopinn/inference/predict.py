"""Batched prediction over a whole scan and streaming reconstruction of the object.

:func:`iter_predictions` turns groups of diffraction patterns into complex object patches, one batch at
a time, reading only that batch from ``scan.diffraction`` (so a memory-mapped scan is never loaded
whole). :func:`reconstruct` groups the scan, feeds every batch straight into a
:class:`~ptychopinn.inference.stitch.Stitcher` and returns the stitched object: peak memory is the
model, one batch and the canvas, whatever the number of scan points.

Input normalisation: the network sees ``x = a * diffraction`` with ``a = input_scale(diffraction)``
computed from the scan being reconstructed (the rule used in training: each scan is normalised by its
own statistics, so the mean pattern energy the network sees is always ``(N/2)**2``).

Stitching at gridsize > 1: every one of the C member patches of a group is stitched at its OWN absolute
position (group centre + relative offset), because the network predicts member patch c centred on scan
point c. Averaging the C channels into one patch before placement, or placing member patches at the
group centre, superimposes patches from different object regions (the reference system's
checkerboard / blob-lattice artefacts). Every scan point seeds one group, so every point is covered.

The output grid is the object pixel grid (see :mod:`ptychopinn.inference.stitch`): with the default
geometry ``obj[y, x]`` is object pixel (row y, column x).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ptychopinn.config import PRECISIONS, InferenceConfig, ModelConfig
from ptychopinn.config_fields import is_int
from ptychopinn.data.grouping import Groups, effective_neighbor_count, group_positions
from ptychopinn.data.normalize import input_scale as compute_input_scale
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.inference.stitch import Stitcher, canvas_geometry
from ptychopinn.runtime import resolve_device

__all__ = ["Reconstruction", "check_scan_fits_model", "iter_predictions", "reconstruct",
           "scan_groups"]

logger = logging.getLogger(__name__)


class PatchPredictor(Protocol):
    """What inference needs of a model (``PtychoPINN`` or a test double)."""

    config: ModelConfig

    def predict_patches(self, x: torch.Tensor, relative_offsets: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """A stitched reconstruction.

    Attributes:
        obj: ``[H, W]`` complex64 object; canvas pixel ``(row, col)`` is object pixel
            ``(origin[1] + row, origin[0] + col)``; 0 where no window reached.
        coverage: ``[H, W]`` float32 summed window weights (about the number of windows per pixel).
        origin: ``(x0, y0)`` object pixel of canvas pixel ``(0, 0)``; ``(0, 0)`` unless positions are
            negative.
        positions: ``[M, 2]`` float64 (x, y) object pixels of the scan points.
        window: stitch window side in pixels.
        n_patterns: M, number of diffraction patterns in the scan.
        n_groups: B, number of groups predicted (M for every gridsize here).
        input_scale: factor ``a`` applied to the amplitudes before the network.
        sync: the stitching synchronisation applied (``'off'``, ``'phase'`` or ``'phase+amplitude'``).
        unsynchronised: ``[H, W]`` complex64, the same windows averaged without synchronisation, when
            :func:`reconstruct` was asked to keep it and synchronised (the start refinement prefers); else None.
    """

    obj: np.ndarray
    coverage: np.ndarray
    origin: tuple[float, float]
    positions: np.ndarray
    window: int
    n_patterns: int
    n_groups: int
    input_scale: float
    sync: str = "off"
    unsynchronised: np.ndarray | None = field(default=None, repr=False)

    @property
    def amplitude(self) -> np.ndarray:
        """``[H, W]`` float32 ``|obj|``."""
        return np.abs(self.obj).astype(np.float32)

    @property
    def phase(self) -> np.ndarray:
        """``[H, W]`` float32 ``angle(obj)`` in radians, 0 where uncovered."""
        return np.angle(self.obj).astype(np.float32)


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {list(PRECISIONS)}, found {precision!r}; use '32'")
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def scan_groups(positions: np.ndarray, gridsize: int) -> Groups:
    """Inference grouping: one group per scan point, the point itself as member 0.

    ``positions``: ``[M, 2]`` (x, y) px. gridsize 1 is the identity; for gridsize g > 1 each point
    seeds a group with its C-1 nearest neighbours (deterministic, no setting changes it), so every point
    is covered.
    """
    if gridsize == 1:
        return group_positions(positions, 1)
    return group_positions(positions, gridsize, n_groups=None,
                           neighbor_count=effective_neighbor_count(1, gridsize), sequential=True)


def iter_predictions(
    model: PatchPredictor, scan: ScanData, groups: Groups, *, batch_size: int = 64, precision: str = "32",
    device: str | torch.device = "cpu", input_scale: float | None = None,
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Predict the object patches of every group, batch by batch.

    Args:
        model: a ``PtychoPINN`` (or anything with ``config`` and ``predict_patches``); moved to
            ``device`` and put in eval mode for the duration (its train/eval mode is restored after).
        scan: the scan; only the rows of one batch of ``scan.diffraction`` are read at a time.
        groups: ``indices [B, C]`` into the scan and offsets, C = model gridsize**2.
        batch_size: groups per forward pass.
        precision: ``'32'``; ``'bf16-mixed'`` / ``'16-mixed'`` run the network under ``torch.autocast``.
        device: where the network runs.
        input_scale: amplitude factor ``a``; default ``input_scale(scan.diffraction)`` over the measured pixels.

    Yields:
        ``(patches, member_positions)``: ``[b, C, N, N]`` complex64 tensor on ``device``, and
        ``[b, C, 2]`` float64 numpy absolute (x, y) object pixels of each member (centre + relative).
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size: expected a positive integer, found {batch_size!r}; use e.g. 64")
    dev = resolve_device(device)
    amp = _autocast(precision, dev)  # validates precision before any work
    n = scan.N
    if groups.channels != model.config.channels:
        raise DataFormatError(f"groups have {groups.channels} members but the model (gridsize "
                              f"{model.config.gridsize}) expects {model.config.channels}; group with "
                              f"gridsize {model.config.gridsize}")
    w = scan.pixel_weights()
    a = float(compute_input_scale(scan.diffraction, weights=w) if input_scale is None else input_scale)
    wt = None if w is None else torch.from_numpy(w).to(dev)
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.to(dev)
        module.eval()
    try:
        for start in range(0, groups.n_groups, batch_size):
            idx = groups.indices[start:start + batch_size]
            b, c = idx.shape
            # Fancy indexing a memmap reads just these rows; float32 math matches training.
            x = np.asarray(scan.diffraction[idx.reshape(-1)], dtype=np.float32).reshape(b, c, n, n)
            xt = torch.from_numpy(x).to(dev, non_blocking=True).mul_(a)
            if wt is not None:  # masked detector pixels carry no measurement: the network sees 0 there
                xt.mul_(wt)
            rel = torch.from_numpy(groups.relative_offsets[start:start + b].astype(np.float32)).to(dev)
            with torch.inference_mode(), amp:
                patches = model.predict_patches(xt, rel)
            stop = start + b
            member_pos = groups.global_offsets[start:stop, None, :] + groups.relative_offsets[start:stop]
            yield patches.to(torch.complex64), member_pos
    finally:
        if module is not None:
            module.train(was_training)


def _sync_fits(n_windows: int, window: int) -> bool:
    """Whether phase synchronisation may keep every window (complex64) until the end: at most a quarter of
    :func:`ptychopinn.limits.memory_limit`; otherwise stitching stays streaming and a warning says so."""
    from ptychopinn.limits import format_bytes, memory_limit

    need = n_windows * window * window * 8 * 2  # the windows and their weights, and the solver's copy
    if need <= memory_limit() // 4:
        return True
    logger.warning("stitch_sync: keeping all %d windows would take about %s, over a quarter of the memory limit; "
                   "stitching without phase synchronisation (raise PTYCHOPINN_MAX_MEMORY to keep it)",
                   n_windows, format_bytes(need))
    return False


def check_scan_fits_model(model: ModelConfig, scan: ScanData) -> None:
    """The one check that a trained model can reconstruct ``scan``: its patterns are ``model.N`` pixels.

    Raises:
        DataFormatError: naming both sizes and how to fix it.
    """
    if model.N != scan.N:
        raise DataFormatError(f"model was trained on {model.N}x{model.N} patterns but the scan has "
                              f"{scan.N}x{scan.N} patterns; use a model trained with N={scan.N} or "
                              f"crop/resample the patterns to {model.N}x{model.N}")


def reconstruct(
    model: PatchPredictor, scan: ScanData, config: InferenceConfig | None = None, *,
    object_shape: tuple[int, int] | None = None, device: str | torch.device | None = None,
    progress: bool = False, input_scale: float | None = None, keep_unsynchronised: bool = False,
) -> Reconstruction:
    """Predict every scan point and stitch one complex object (streaming: memory = model + batch + canvas).

    Args:
        model: a ``PtychoPINN`` (``config.N`` must equal ``scan.N``).
        scan: the scan to reconstruct; may hold a memory-mapped ``diffraction``.
        config: batch size, precision, stitch window, taper and phase synchronisation, accelerator.
        object_shape: ``(H, W)`` canvas on the object grid (origin (0, 0), windows outside are clipped);
            default: the bounding box of all windows (see
            :func:`~ptychopinn.inference.stitch.canvas_geometry`).
        device: overrides ``config.accelerator`` ('auto', 'cpu', 'cuda', ...).
        progress: show a tqdm bar over batches.
        input_scale: amplitude factor ``a``; default computed from this scan.
        keep_unsynchronised: also return the windows averaged without synchronisation
            (``Reconstruction.unsynchronised``; the same prediction pass).

    Returns:
        :class:`Reconstruction` with ``obj [H, W]`` complex64 and ``coverage [H, W]`` float32.

    Raises:
        DataFormatError: pattern size differs from the model's, or too few points for the gridsize.
    """
    cfg = InferenceConfig() if config is None else config
    mcfg = model.config
    check_scan_fits_model(mcfg, scan)
    dev = resolve_device(cfg.accelerator if device is None else device)
    groups = scan_groups(scan.positions, mcfg.gridsize)
    window = cfg.window_for(scan.N)
    shape, origin = canvas_geometry(scan.positions, scan.N, window, object_shape)
    mode = cfg.stitch_sync if cfg.stitch_sync != "auto" else ("phase" if mcfg.gridsize == 1 else "off")
    sync = mode != "off" and _sync_fits(groups.n_groups * mcfg.channels, window)
    stitcher = Stitcher(shape, window, origin=origin, device=dev, taper=cfg.stitch_taper,
                        sync=sync, sync_amplitude=mode == "phase+amplitude")
    a = float(compute_input_scale(scan.diffraction, weights=scan.pixel_weights()) if input_scale is None
              else input_scale)
    n_batches = math.ceil(groups.n_groups / cfg.batch_size)
    batches = iter_predictions(model, scan, groups, batch_size=cfg.batch_size, precision=cfg.precision,
                               device=dev, input_scale=a)
    with tqdm(total=n_batches, disable=not progress, desc="reconstruct", unit="batch") as bar:
        for patches, member_pos in batches:
            stitcher.add(patches.reshape(-1, scan.N, scan.N), member_pos.reshape(-1, 2))
            bar.update(1)
    plain = stitcher.unsynchronised_result()[0] if keep_unsynchronised and sync else None
    obj, coverage = stitcher.result()
    return Reconstruction(obj=obj, coverage=coverage, origin=origin, positions=scan.positions.copy(),
                          window=window, n_patterns=scan.n_points, n_groups=groups.n_groups, input_scale=a,
                          sync=mode if sync else "off", unsynchronised=plain)
