"""Figures for people: objects, comparisons with ground truth, FRC curves, loss curves, scan previews.

Every image panel has a title and a colour bar; colour maps and orientation are those of
:mod:`ptychopinn.drawing` (amplitude ``'gray'``, phase ``'twilight'`` or ``'viridis'``), errors ``'magma'``.

matplotlib is imported lazily inside the functions and only through ``matplotlib.figure.Figure`` with
an Agg canvas, so no pyplot state or interactive backend is ever touched. Every file is written
atomically: rendered to a temporary file in the destination folder, then moved into place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.drawing import (
    amplitude_panel,
    check_image,
    colour_limits,
    covered_mask,
    draw_scale_bar,
    image_panel,
    new_figure,
    phase_panel,
    phase_style,
    save_figure,
)
from ptychopinn.errors import DataFormatError, describe_array

__all__ = [
    "save_amplitude_png",
    "save_comparison_figure",
    "save_frc_figure",
    "save_loss_curves",
    "save_object_figure",
    "save_phase_png",
    "save_scan_preview",
]


# -------------------------------------------------------------------------------------------- objects
def save_object_figure(
    obj: np.ndarray, path: str | os.PathLike[str], *, title: str = "", dpi: float = 120
) -> Path:
    """Amplitude (gray) and phase side by side.

    Args:
        obj: ``[H, W]`` complex object (a real array is shown with phase 0 / pi).
        path: output file; the suffix picks the format (``.png``, ``.pdf``, ``.svg``, ...).
        title: figure title. dpi: raster resolution.

    Returns:
        ``Path(path)``.
    """
    o = check_image("obj", obj)
    fig = new_figure((10.0, 4.4))
    ax_a, ax_p = fig.subplots(1, 2)
    amplitude_panel(fig, ax_a, o, "Amplitude")
    phase_panel(fig, ax_p, o, "Phase")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi)


def save_amplitude_png(
    obj: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "Amplitude",
    dpi: float = 120,
    cmap: str = "gray",
    coverage: np.ndarray | None = None,
    pixel_size_m: float | None = None,
    origin_xy: tuple[float, float] | None = None,
) -> Path:
    """Single-panel ``|obj|`` image with colour bar and scale bar.

    Args:
        obj: ``[H, W]`` complex or real.
        path: output file; the suffix picks the format.
        coverage: ``[H, W]`` probe coverage (float weights or bool): pixels with none are drawn in
            :data:`~ptychopinn.drawing.MASKED_COLOUR` and left out of the colour limits. None = every pixel counts.
        pixel_size_m: object pixel size in metres: the scale bar in nm/µm/mm (None: in pixels).
        origin_xy: object-pixel ``(x, y)`` of ``obj[0, 0]`` (a reconstruction's ``origin_xy``), so the axes
            are in object pixels; None = array indices.

    Returns ``Path(path)``.
    """
    o = check_image("obj", obj)
    covered = covered_mask(coverage, o.shape)
    fig = new_figure((5.5, 4.6))
    amp = np.abs(o)
    ax = fig.subplots()
    image_panel(fig, ax, amp, title, cmap, *colour_limits(amp, covered), "amplitude (a.u.)", covered=covered,
           origin_xy=origin_xy)
    draw_scale_bar(ax, o.shape[1], pixel_size_m)
    return save_figure(fig, path, dpi)


def save_phase_png(
    obj: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "Phase",
    dpi: float = 120,
    coverage: np.ndarray | None = None,
    pixel_size_m: float | None = None,
    origin_xy: tuple[float, float] | None = None,
) -> Path:
    """Single-panel ``angle(obj)`` image (rad) with colour bar and scale bar; ``obj``: ``[H, W]`` complex.

    ``coverage``, ``pixel_size_m`` and ``origin_xy`` as in :func:`save_amplitude_png`; the colour map is cyclic when the
    covered phase spans more than pi. Returns ``Path(path)``.
    """
    o = check_image("obj", obj)
    covered = covered_mask(coverage, o.shape)
    fig = new_figure((5.5, 4.6))
    ax = fig.subplots()
    phase_panel(fig, ax, o, title, covered=covered, origin_xy=origin_xy)
    draw_scale_bar(ax, o.shape[1], pixel_size_m)
    return save_figure(fig, path, dpi)


def save_comparison_figure(
    recon: np.ndarray,
    truth: np.ndarray,
    path: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Any] | None = None,
    title: str = "",
    dpi: float = 120,
    mask: np.ndarray | None = None,
    origin_xy: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """2x3 grid: amplitude row (recon, truth, ``|amplitude error|``), phase row (recon, truth, ``|wrapped
    phase error|``). Recon and truth panels share colour limits.

    The arrays are compared as given: pass aligned crops, e.g. the first two outputs of
    :func:`ptychopinn.metrics.align_for_comparison` (the alignment :func:`ptychopinn.metrics.evaluate`
    uses).

    Args:
        recon, truth: ``[h, w]`` complex, same shape and pixel grid.
        path: output file. metrics: optional :func:`~ptychopinn.metrics.evaluate` result; MAE, SSIM and
            Pearson of both channels are printed in the title. title: prefix of the figure title.
        mask: ``[h, w]`` bool, pixels the reconstruction covers (``AlignmentInfo.mask``); the others are
            drawn in :data:`~ptychopinn.drawing.MASKED_COLOUR` and left out of every colour limit. None = all pixels.
        origin_xy: object-pixel coordinates ``(x, y)`` of the crop's top-left pixel (from
            ``AlignmentInfo.region``), so that the axes are in object pixels.

    Returns:
        ``Path(path)``.
    """
    r, t = check_image("recon", recon), check_image("truth", truth)
    if r.shape != t.shape:
        raise DataFormatError(
            f"recon and truth: expected one shape, found {r.shape} and {t.shape}; "
            f"align them first with ptychopinn.metrics.align_for_comparison"
        )
    cov = covered_mask(mask, r.shape)
    kw: dict[str, Any] = {"covered": cov, "origin_xy": (float(origin_xy[0]), float(origin_xy[1]))}
    sel = (lambda a: a) if cov is None else (lambda a: a[cov])
    fig = new_figure((14.0, 8.0))
    axes = fig.subplots(2, 3)
    amp_lim = colour_limits(np.concatenate([sel(np.abs(r)).ravel(), sel(np.abs(t)).ravel()]))
    amplitude_panel(fig, axes[0, 0], r, "Reconstruction amplitude", amp_lim, **kw)
    amplitude_panel(fig, axes[0, 1], t, "Ground-truth amplitude", amp_lim, **kw)
    amp_err = np.abs(np.abs(r) - np.abs(t))
    image_panel(fig, axes[0, 2], amp_err, "|amplitude error|", "magma", 0.0, colour_limits(amp_err, cov)[1], "a.u.",
                **kw)
    style = phase_style(np.angle(r), np.angle(t), covered=cov)
    phase_panel(fig, axes[1, 0], r, "Reconstruction phase", style, **kw)
    phase_panel(fig, axes[1, 1], t, "Ground-truth phase", style, **kw)
    ph_err = np.abs(np.angle(r * np.conj(t)))  # wrapped to [0, pi]
    image_panel(fig, axes[1, 2], ph_err, "|phase error| (wrapped)", "magma", 0.0, colour_limits(ph_err, cov)[1],
                "rad", **kw)
    parts = [title] if title else []
    if metrics is not None:
        parts.append(_metrics_line(metrics))
    if parts:
        fig.suptitle("\n".join(parts), fontsize=11)
    return save_figure(fig, path, dpi)


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4g}"


def _metrics_line(metrics: Mapping[str, Any]) -> str:
    try:
        return " | ".join(
            f"{ch}: MAE {_fmt(metrics[ch]['mae'])}, SSIM {_fmt(metrics[ch]['ssim'])}, "
            f"Pearson {_fmt(metrics[ch]['pearson'])}"
            for ch in ("amplitude", "phase")
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(
            f"metrics: expected the dict returned by ptychopinn.metrics.evaluate, found keys "
            f"{sorted(metrics) if isinstance(metrics, Mapping) else type(metrics).__name__} ({exc!r}); "
            f"pass evaluate(...)'s result or None"
        ) from None


# ------------------------------------------------------------------------------------------------ FRC
def save_frc_figure(metrics: Mapping[str, Any], path: str | os.PathLike[str], *, dpi: float = 120) -> Path:
    """FRC curves of amplitude and phase with the 0.5 and half-bit thresholds; resolutions in the legend.

    Args:
        metrics: the dict from :func:`ptychopinn.metrics.evaluate` (uses ``'frc'`` lists of equal length:
            ``freq`` in cycles/pixel, ``amplitude``, ``phase``, ``half_bit``; and each channel's
            ``frc_resolution_px_half_bit`` / ``frc_resolution_px_0.5``).
        path: output file. dpi: raster resolution.

    Returns:
        ``Path(path)``.
    """
    try:
        curves = {
            k: np.asarray(metrics["frc"][k], dtype=np.float64)
            for k in ("freq", "amplitude", "phase", "half_bit")
        }
        res = {
            ch: (metrics[ch]["frc_resolution_px_half_bit"], metrics[ch]["frc_resolution_px_0.5"])
            for ch in ("amplitude", "phase")
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(
            f"metrics: expected evaluate()'s dict with 'frc' curves and per-channel FRC resolutions, "
            f"missing or invalid {exc!r}; pass the result of ptychopinn.metrics.evaluate"
        ) from None
    n = curves["freq"].shape
    if len(n) != 1 or n[0] < 2 or any(v.shape != n for v in curves.values()):
        raise DataFormatError(
            f"metrics['frc']: expected 1-D lists of one length >= 2, found shapes "
            f"{ {k: v.shape for k, v in curves.items()} }; pass the result of ptychopinn.metrics.evaluate"
        )
    fig = new_figure((7.5, 4.8))
    ax = fig.subplots()
    f = curves["freq"]
    for ch, colour in (("amplitude", "tab:blue"), ("phase", "tab:orange")):
        hb, half = res[ch]
        ax.plot(
            f, curves[ch], color=colour, lw=1.8, label=f"{ch} (half-bit {_fmt(hb)} px, 0.5: {_fmt(half)} px)"
        )
    ax.plot(f, curves["half_bit"], color="k", ls="--", lw=1.0, label="half-bit threshold")
    ax.axhline(0.5, color="grey", ls=":", lw=1.0, label="0.5 threshold")
    ax.set_xlim(0.0, float(f[-1]))
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("FRC")
    ax.set_title("Fourier ring correlation (resolution = 1 / crossing frequency)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, path, dpi)


# ----------------------------------------------------------------------------------------------- loss
def save_loss_curves(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    title: str = "Training loss",
    dpi: float = 120,
    xlabel: str = "epoch",
    ylabel: str = "loss",
) -> Path:
    """Per-epoch (or per-iteration, with ``xlabel``) curves, e.g. ``{"train_loss": [...]}``; 1..n on x.

    The y axis is logarithmic when every finite value is positive. NaN/inf/None values are left out
    (gaps in the line); a series with no finite value is listed in the legend as ``(no finite values)``.

    Args:
        history: name -> sequence of per-epoch losses (floats, any units).
        path: output file. title: axes title. dpi: raster resolution.

    Returns:
        ``Path(path)``.
    """
    if not isinstance(history, Mapping) or not history:
        raise DataFormatError(
            f"history: expected a non-empty mapping name -> list of per-epoch losses, found "
            f"{type(history).__name__} {'(empty)' if isinstance(history, Mapping) else ''}; "
            f"pass e.g. {{'train_loss': [0.9, 0.5]}}"
        )
    series: dict[str, np.ndarray] = {}
    for name, values in history.items():
        try:
            arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.empty((0, 0))
        if arr.ndim != 1:
            raise DataFormatError(
                f"history[{name!r}]: expected a flat sequence of numbers, found {describe_array(arr)}; "
                f"pass one float per epoch"
            )
        series[str(name)] = np.where(np.isfinite(arr), arr, np.nan)
    finite = np.concatenate([v[np.isfinite(v)] for v in series.values()])
    fig = new_figure((7.5, 4.8))
    ax = fig.subplots()
    for name, v in series.items():
        epochs = np.arange(1, v.size + 1)
        label = name if np.isfinite(v).any() else f"{name} (no finite values)"
        ax.plot(epochs, v, marker="o" if v.size <= 50 else None, ms=3, lw=1.5, label=label)
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi)


# ------------------------------------------------------------------------------------------ scan view
def save_scan_preview(
    obj: np.ndarray,
    probe: np.ndarray,
    positions: np.ndarray,
    patterns: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    dpi: float = 120,
) -> Path:
    """2x3 overview of a scan: object amplitude with the scan positions, object phase, probe amplitude,
    probe phase, and two diffraction patterns (the first and the middle one) on a log colour scale.

    Args:
        obj: ``[H, W]`` complex object.
        probe: ``[N, N]`` complex probe.
        positions: ``[M, 2]`` float, ``(x, y)`` = (column, row) in object pixels, drawn on the object with
            ``origin='upper'``; the first position is marked separately.
        patterns: ``[K, N', N']`` float diffraction amplitudes (or counts), K >= 1, non-negative.
        path: output file. title: figure title. dpi: raster resolution.

    Returns:
        ``Path(path)``.
    """
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    o, p = check_image("obj", obj), check_image("probe", probe)
    pos = np.asarray(positions)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 1 or not np.all(np.isfinite(pos)):
        raise DataFormatError(
            f"positions: expected a finite [M, 2] array of (x, y) pixels, found {describe_array(pos)}; "
            f"stack them as np.stack([x, y], axis=1)"
        )
    pats = np.asarray(patterns)
    if pats.ndim != 3 or pats.shape[0] < 1 or np.iscomplexobj(pats) or not np.all(np.isfinite(pats)):
        raise DataFormatError(
            f"patterns: expected a finite real [K, N, N] array with K >= 1, found {describe_array(pats)}; "
            f"pass the diffraction amplitudes of the scan"
        )
    fig = new_figure((14.0, 8.5))
    axes = fig.subplots(2, 3)
    amplitude_panel(fig, axes[0, 0], o, f"Object amplitude + {pos.shape[0]} scan positions")
    axes[0, 0].plot(pos[:, 0], pos[:, 1], ".", color="tab:red", ms=3, alpha=0.8, label="scan position")
    axes[0, 0].plot(pos[:1, 0], pos[:1, 1], "o", mfc="none", mec="cyan", ms=8, label="first position")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    phase_panel(fig, axes[0, 1], o, "Object phase")
    amplitude_panel(fig, axes[0, 2], p, "Probe amplitude")
    phase_panel(fig, axes[1, 0], p, "Probe phase")
    cmap = colormaps["viridis"].with_extremes(bad=colormaps["viridis"](0.0))
    for ax, k in zip(axes[1, 1:], (0, pats.shape[0] // 2), strict=True):
        pat = pats[k].astype(np.float64)
        top = float(pat.max())
        positive = pat[pat > 0]
        if top > 0:
            # Diffraction spans decades; floor the scale 6 decades below the peak so one zero or
            # near-zero pixel does not flatten everything else.
            norm: Normalize = LogNorm(vmin=max(float(positive.min()), top * 1e-6), vmax=top)
        else:
            norm = Normalize(vmin=0.0, vmax=1.0)
        im = ax.imshow(
            np.where(pat > 0, pat, np.nan), cmap=cmap, norm=norm, origin="upper", interpolation="nearest"
        )
        ax.set_title(f"Diffraction pattern #{k} (log scale)", fontsize=10)
        ax.set_xlabel("detector column (px)", fontsize=8)
        ax.set_ylabel("detector row (px)", fontsize=8)
        ax.tick_params(labelsize=7)
        cb = fig.colorbar(im, ax=ax, shrink=0.85)
        cb.set_label("amplitude (a.u.)", fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi)
