"""The pictures a reconstruction writes, a complex-valued view, 32-bit TIFF export, and the validation-patch
image that training sends to TensorBoard / MLflow.

- :func:`complex_to_rgb`: HSV view of a complex image, hue = phase, value (brightness) = amplitude.
- :func:`save_complex_png`: that view with a colour wheel as its legend.
- :func:`save_tiff`: one ``[H, W]`` float32 TIFF (every image tool opens it; Fiji/ImageJ keeps the values).
- :func:`save_object_images`: ``amplitude.png``, ``phase.png``, ``complex.png``, ``amplitude.tif``,
  ``phase.tif`` of one reconstruction, uncovered pixels masked.
- :func:`save_probe_png`: amplitude and phase of an estimated or refined probe.
- :func:`patch_figure_rgb`: ``[H, W, 3]`` uint8 image of one measured pattern next to the predicted
  amplitude and phase of its patch.

matplotlib is imported lazily; figures use the Agg canvas of :mod:`ptychopinn.drawing`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ptychopinn.drawing import (
    MASKED_COLOUR,
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
    write_atomic,
)
from ptychopinn.errors import DataFormatError, describe_array
from ptychopinn.plots import save_amplitude_png, save_phase_png

if TYPE_CHECKING:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

__all__ = ["OBJECT_IMAGE_NAMES", "complex_to_rgb", "patch_figure_rgb", "save_complex_png", "save_object_images",
           "save_probe_png", "save_tiff"]

_GREY = tuple(int(MASKED_COLOUR[i:i + 2], 16) / 255.0 for i in (1, 3, 5))


def complex_to_rgb(obj: np.ndarray, covered: np.ndarray | None = None,
                   amplitude_max: float | None = None) -> np.ndarray:
    """HSV view of a complex image as ``[H, W, 3]`` float RGB in [0, 1].

    Hue = phase (``-pi`` and ``pi`` meet: the hue circle is cyclic like the phase), saturation 1, value =
    ``|obj| / amplitude_max`` clipped to [0, 1] (default ``amplitude_max``: the largest covered amplitude).
    Pixels outside ``covered`` (``[H, W]`` bool) are :data:`~ptychopinn.drawing.MASKED_COLOUR` grey.
    """
    from matplotlib.colors import hsv_to_rgb

    o = check_image("obj", obj)
    amp = np.abs(o).astype(np.float64)
    top = amplitude_max if amplitude_max is not None else float(np.max(amp if covered is None else amp[covered]))
    value = np.clip(amp / top, 0.0, 1.0) if top > 0 else np.zeros_like(amp)
    hue = (np.angle(o) + math.pi) / (2 * math.pi)
    rgb = hsv_to_rgb(np.stack([np.mod(hue, 1.0), np.ones_like(hue), value], axis=-1))
    if covered is not None:
        rgb[~covered] = _GREY
    return rgb


def _colour_wheel(ax: Any) -> None:
    """Legend of :func:`complex_to_rgb`: angle = phase, radius = amplitude (0 at the centre)."""
    n = 101
    y, x = np.mgrid[-1:1:complex(0, n), -1:1:complex(0, n)]
    r = np.hypot(x, y)
    wheel = complex_to_rgb(r * np.exp(1j * np.arctan2(-y, x)), amplitude_max=1.0)
    rgba = np.concatenate([wheel, (r <= 1.0)[..., None].astype(float)], axis=-1)
    ax.imshow(rgba, extent=(-1, 1, -1, 1), interpolation="bilinear")
    ax.set_xticks([-1, 0, 1], ["±π", "", "0"], fontsize=7)
    ax.set_yticks([-1, 0, 1], ["−π/2", "", "π/2"], fontsize=7)
    ax.set_title("hue = phase\nbrightness =\namplitude", fontsize=7)
    for side in ax.spines.values():
        side.set_visible(False)


def save_complex_png(
    obj: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "Complex object",
    coverage: np.ndarray | None = None,
    pixel_size_m: float | None = None,
    origin_xy: tuple[float, float] | None = None,
    dpi: float = 120,
) -> Path:
    """The :func:`complex_to_rgb` view of ``obj`` (``[H, W]`` complex) with a colour-wheel legend and a scale
    bar; ``coverage`` / ``pixel_size_m`` / ``origin_xy`` as in :func:`ptychopinn.plots.save_amplitude_png`."""
    o = check_image("obj", obj)
    covered = covered_mask(coverage, o.shape)
    fig = new_figure((6.4, 4.6))
    ax, key = fig.subplots(1, 2, gridspec_kw={"width_ratios": [5, 1]})
    extent = None
    if origin_xy is not None:
        x0, y0 = origin_xy
        extent = (x0 - 0.5, x0 + o.shape[1] - 0.5, y0 + o.shape[0] - 0.5, y0 - 0.5)
    ax.imshow(complex_to_rgb(o, covered), origin="upper", interpolation="nearest", extent=extent)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x (object px)", fontsize=8)
    ax.set_ylabel("y (object px)", fontsize=8)
    ax.tick_params(labelsize=7)
    draw_scale_bar(ax, o.shape[1], pixel_size_m)
    _colour_wheel(key)
    key.set_box_aspect(1)
    return save_figure(fig, path, dpi)


def save_tiff(image: np.ndarray, path: str | os.PathLike[str], *, description: str = "") -> Path:
    """Write ``image`` (``[H, W]`` real) as a single-page 32-bit float TIFF, atomically; returns the path.

    NaN is kept (image tools show it as "no data"); ``description`` goes into the ImageDescription tag.
    """
    import tifffile

    arr = np.asarray(image)
    if arr.ndim != 2 or np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise DataFormatError(f"image: expected a real 2-D array [H, W], found {describe_array(arr)}; "
                              "write amplitude and phase (np.abs, np.angle) separately")
    data = np.ascontiguousarray(arr, dtype=np.float32)
    return write_atomic(Path(path), lambda tmp: tifffile.imwrite(
        tmp, data, photometric="minisblack", description=description or None, metadata=None))


OBJECT_IMAGE_NAMES = ("amplitude.png", "phase.png", "complex.png", "amplitude.tif", "phase.tif")
"""The files :func:`save_object_images` writes."""


def save_object_images(
    obj: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    coverage: np.ndarray | None = None,
    pixel_size_m: float | None = None,
    origin_xy: tuple[float, float] | None = None,
    title: str = "Reconstructed",
) -> dict[str, Path]:
    """All pictures of one reconstruction in ``out_dir``; returns ``{file name: path}``.

    ``amplitude.png`` (gray) and ``phase.png`` (cyclic map when the phase wraps) with uncovered pixels
    masked and colour limits from the covered region, ``complex.png`` (:func:`save_complex_png`), and
    ``amplitude.tif`` / ``phase.tif`` (float32, radians; uncovered pixels NaN).

    Args:
        obj: ``[H, W]`` complex object. coverage: ``[H, W]`` probe coverage (None: all covered).
        pixel_size_m: object pixel size in metres, for the scale bars (None: bars in pixels).
        origin_xy: object-pixel ``(x, y)`` of ``obj[0, 0]`` (axes in object pixels).
        title: first word of the image titles (e.g. "Refined").
    """
    o = check_image("obj", obj)
    covered = covered_mask(coverage, o.shape)
    out = Path(out_dir)
    kw: dict[str, Any] = {"coverage": covered, "pixel_size_m": pixel_size_m, "origin_xy": origin_xy}
    nan_outside = (lambda a: a) if covered is None else (lambda a: np.where(covered, a, np.nan))
    note = "" if covered is None else "; NaN = no probe coverage"
    return {
        "amplitude.png": save_amplitude_png(o, out / "amplitude.png", title=f"{title} amplitude", **kw),
        "phase.png": save_phase_png(o, out / "phase.png", title=f"{title} phase", **kw),
        "complex.png": save_complex_png(o, out / "complex.png", title=f"{title} object", **kw),
        "amplitude.tif": save_tiff(nan_outside(np.abs(o)), out / "amplitude.tif",
                                   description=f"ptychopinn: object amplitude{note}"),
        "phase.tif": save_tiff(nan_outside(np.angle(o)), out / "phase.tif",
                               description=f"ptychopinn: object phase in radians{note}"),
    }


def save_probe_png(probe: np.ndarray, path: str | os.PathLike[str], *, title: str = "Probe",
                   pixel_size_m: float | None = None, dpi: float = 120) -> Path:
    """Amplitude and phase of a probe side by side, atomically; returns the path.

    Args:
        probe: ``[N, N]`` complex probe on the object grid.
        path: the PNG to write.
        title: figure title (e.g. "Refined probe").
        pixel_size_m: object pixel size in metres, for the scale bars (None: bars in pixels).

    Axes are object pixels from the probe centre (pixel ``N//2``, the point on a scan position); the phase is
    shown where the amplitude is at least 5 % of its peak (grey elsewhere, where it means nothing).
    """
    p = check_image("probe", probe)
    amp = np.abs(p)
    top = float(amp.max())
    covered = amp >= 0.05 * top if top > 0 else None
    origin = (-(p.shape[1] // 2), -(p.shape[0] // 2))
    fig = new_figure((10.0, 4.4))
    ax_a, ax_p = fig.subplots(1, 2)
    amplitude_panel(fig, ax_a, p, "Amplitude", origin_xy=origin)
    phase_panel(fig, ax_p, p, "Phase (amplitude >= 5 % of peak)", covered=covered, origin_xy=origin)
    for ax in (ax_a, ax_p):
        draw_scale_bar(ax, p.shape[1], pixel_size_m)
    fig.suptitle(title)
    return save_figure(fig, path, dpi)


def patch_figure_rgb(pattern: np.ndarray, patch: np.ndarray, *, title: str = "", dpi: float = 80) -> np.ndarray:
    """One validation sample as a picture: the measured diffraction amplitude (log scale) next to the
    predicted amplitude and phase of its object patch.

    Args:
        pattern: ``[N, N]`` measured amplitude (sqrt counts, any scale), >= 0.
        patch: ``[N, N]`` complex predicted object patch.
        title: figure title (e.g. "epoch 12"). dpi: raster resolution.

    Returns:
        ``[H, W, 3]`` uint8 RGB image (for ``SummaryWriter.add_image(..., dataformats='HWC')`` or MLflow).
    """
    from matplotlib.colors import LogNorm

    pat = np.asarray(pattern, dtype=np.float64)
    o = check_image("patch", patch)
    if pat.ndim != 2 or not np.all(np.isfinite(pat)):
        raise DataFormatError(f"pattern: expected a finite [N, N] array, found {describe_array(pat)}")
    fig = new_figure((10.5, 3.3))
    ax_d, ax_a, ax_p = fig.subplots(1, 3)
    top = float(pat.max())
    shown = np.where(pat > 0, pat, np.nan)
    norm = LogNorm(vmin=max(top * 1e-4, float(np.nanmin(shown)) if np.any(pat > 0) else 1e-12),
                   vmax=top) if top > 0 else None
    im = ax_d.imshow(shown, cmap="viridis", norm=norm, origin="upper", interpolation="nearest")
    ax_d.set_title("Measured pattern (log)", fontsize=9)
    ax_d.set_axis_off()
    fig.colorbar(im, ax=ax_d, shrink=0.8).ax.tick_params(labelsize=6)
    amp = np.abs(o)
    image_panel(fig, ax_a, amp, "Predicted amplitude", "gray", *colour_limits(amp), "amplitude")
    ph = np.angle(o)
    image_panel(fig, ax_p, ph, "Predicted phase", *phase_style(ph), "phase (rad)")
    if title:
        fig.suptitle(title, fontsize=10)
    canvas = cast("FigureCanvasAgg", fig.canvas)  # new_figure attaches an Agg canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3]).copy()
