"""Drawing kit shared by :mod:`ptychopinn.plots`, :mod:`ptychopinn.pictures` and the training images: figures
on an Agg canvas written atomically, validated images, image panels with colour bars, the coverage mask and
scale bars.

Colour maps: amplitude ``'gray'``; phase ``'twilight'`` (cyclic) over ``[-pi, pi]`` when the phase spans more
than pi (it may wrap), otherwise ``'viridis'`` over the data range (a cyclic map over a partial range would
give both ends one colour). Pixels no scan position covered are :data:`MASKED_COLOUR` grey. Images are drawn
with ``origin='upper'``: row 0 at the top, x = column, y = row.

matplotlib is imported lazily inside the functions and only through ``matplotlib.figure.Figure`` with an Agg
canvas, so no pyplot state or interactive backend is ever touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptychopinn.errors import DataFormatError, describe_array
from ptychopinn.io.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MASKED_COLOUR", "amplitude_panel", "check_image", "colormap", "colour_limits", "covered_mask",
           "draw_scale_bar", "image_panel", "masked", "new_figure", "phase_panel", "phase_style", "save_figure",
           "scale_bar", "write_atomic"]


def new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to the figure; no pyplot, no global backend switch
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: float) -> Path:
    """Render ``fig`` to a temp file next to ``path`` and move it into place; returns ``Path(path)``."""
    out = Path(path)
    fmt = out.suffix.lower().lstrip(".") or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise DataFormatError(
            f"figure path {str(out)!r}: expected a suffix matplotlib can write "
            f"({', '.join(sorted(supported))}), found {out.suffix!r}; use e.g. .png"
        )
    if not dpi > 0:
        raise DataFormatError(f"dpi: expected a positive number, found {dpi!r}; use e.g. dpi=120")
    return write_atomic(out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))


def write_atomic(out: Path, write: Callable[[str], object]) -> Path:
    """Call ``write(temp_path)`` for a temp file next to ``out``, then move it into place
    (:func:`ptychopinn.io.atomic.atomic_path`: fsync, the mode a normal ``open`` gives)."""
    with atomic_path(out) as tmp:
        write(str(tmp))
    return out


def check_image(name: str, a: Any) -> np.ndarray:
    """Validate a 2-D finite (real or complex) image; returns it as an ndarray."""
    arr = np.asarray(a)
    if arr.ndim != 2 or min(arr.shape) < 1 or not np.issubdtype(arr.dtype, np.number):
        raise DataFormatError(
            f"{name}: expected a 2-D numeric array [H, W], found {describe_array(arr)}; squeeze it to 2-D"
        )
    if not np.all(np.isfinite(arr)):
        raise DataFormatError(f"{name}: expected finite values, found NaN/inf; clean the array first")
    return arr


MASKED_COLOUR = "#c8c8c8"
"""Colour of pixels no scan position covered: a neutral grey that none of the colour maps here uses."""


def covered_mask(coverage: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """``[H, W]`` bool, True where ``coverage`` (``[H, W]`` float weights or bool) is > 0; None for None."""
    if coverage is None:
        return None
    c = np.asarray(coverage)
    if c.shape != shape or not (np.issubdtype(c.dtype, np.number) or c.dtype == bool):
        raise DataFormatError(
            f"coverage: expected a numeric array of the object's shape {shape}, found {describe_array(c)}; "
            f"pass the 'coverage' of the reconstruction"
        )
    m = np.isfinite(c) & (c > 0) if c.dtype != bool else c
    if not m.any():
        raise DataFormatError("coverage: expected some covered pixels (> 0), found none; pass coverage=None "
                              "to show the whole canvas")
    return m


def masked(img: np.ndarray, covered: np.ndarray | None) -> np.ndarray:
    """``img`` with uncovered pixels masked (drawn in :data:`MASKED_COLOUR`)."""
    return img if covered is None else np.ma.masked_array(img, mask=~covered)


def colormap(name: Any) -> Any:
    from matplotlib import colormaps

    cm = colormaps[name] if isinstance(name, str) else name
    return cm.with_extremes(bad=MASKED_COLOUR)


def colour_limits(a: np.ndarray, covered: np.ndarray | None = None) -> tuple[float, float]:
    if covered is not None:
        a = a[covered]
    lo, hi = float(np.min(a)), float(np.max(a))
    if hi <= lo:  # a constant image still needs a non-degenerate colour bar
        pad = max(abs(lo), 1.0) * 1e-3
        return lo - pad, hi + pad
    return lo, hi


def phase_style(*phases: np.ndarray, covered: np.ndarray | None = None) -> tuple[str, float, float]:
    """Colour map and limits shared by phase images (see module docstring), over the covered pixels."""
    sel = [p if covered is None else p[covered] for p in phases]
    lo = min(float(np.min(p)) for p in sel)
    hi = max(float(np.max(p)) for p in sel)
    if hi - lo > math.pi:
        return "twilight", -math.pi, math.pi
    return ("viridis", *colour_limits(np.array([lo, hi])))


def image_panel(
    fig: Figure,
    ax: Axes,
    img: np.ndarray,
    title: str,
    cmap: Any,
    vmin: float,
    vmax: float,
    label: str,
    *,
    covered: np.ndarray | None = None,
    origin_xy: tuple[float, float] | None = None,
    **kw: Any,
) -> None:
    if origin_xy is not None:  # axes in object pixels: pixel centres at origin + index
        h, w = img.shape[:2]
        x0, y0 = origin_xy
        kw["extent"] = (x0 - 0.5, x0 + w - 0.5, y0 + h - 0.5, y0 - 0.5)
    im = ax.imshow(masked(img, covered), cmap=colormap(cmap), vmin=vmin, vmax=vmax, origin="upper",
                   interpolation="nearest", **kw)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x (object px)", fontsize=8)
    ax.set_ylabel("y (object px)", fontsize=8)
    ax.tick_params(labelsize=7)
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def amplitude_panel(
    fig: Figure, ax: Axes, obj: np.ndarray, title: str, lim: tuple[float, float] | None = None, **kw: Any
) -> None:
    amp = np.abs(obj)
    image_panel(fig, ax, amp, title, "gray", *(lim or colour_limits(amp, kw.get("covered"))), "amplitude (a.u.)", **kw)


def phase_panel(
    fig: Figure, ax: Axes, obj: np.ndarray, title: str, style: tuple[str, float, float] | None = None, **kw: Any
) -> None:
    ph = np.angle(obj)
    image_panel(fig, ax, ph, title, *(style or phase_style(ph, covered=kw.get("covered"))), "phase (rad)", **kw)


def _nice_length(x: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is <= ``x`` (``x`` > 0)."""
    k = math.floor(math.log10(x))
    for m in (5.0, 2.0, 1.0):
        if m * 10.0**k <= x:
            return m * 10.0**k
    return 10.0**k


def scale_bar(width_px: float, pixel_size_m: float | None = None) -> tuple[float, str]:
    """``(length in pixels, label)`` of a scale bar about a fifth of an image ``width_px`` wide: a round
    number of pixels, or of nm / µm / mm when the object pixel size ``pixel_size_m`` (metres) is known."""
    target = max(width_px / 5.0, 1.0)
    if pixel_size_m is None:
        length = _nice_length(target)
        return length, f"{length:g} px"
    if not (math.isfinite(pixel_size_m) and pixel_size_m > 0):
        raise DataFormatError(f"pixel_size_m: expected a positive number of metres, found {pixel_size_m!r}; "
                              "pass e.g. 1e-8 for 10 nm, or None for a bar in pixels")
    metres = target * pixel_size_m
    unit, scale = next(((u, f) for u, f in (("mm", 1e-3), ("µm", 1e-6), ("nm", 1e-9)) if metres >= f),
                       ("nm", 1e-9))
    length = _nice_length(metres / scale)
    return length * scale / pixel_size_m, f"{length:g} {unit}"


def draw_scale_bar(ax: Axes, width_px: int, pixel_size_m: float | None) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length, label = scale_bar(width_px, pixel_size_m)
    bar = AnchoredSizeBar(ax.transData, length, label, "lower right", pad=0.4, borderpad=0.6, sep=3,
                          color="white", frameon=True, size_vertical=max(width_px / 120.0, 0.5),
                          fontproperties={"size": 8})
    bar.patch.set_facecolor("black")
    bar.patch.set_alpha(0.55)
    bar.patch.set_edgecolor("none")
    ax.add_artist(bar)
