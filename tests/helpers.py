"""Helpers shared by test files of several tiers (imported as ``helpers``: pytest puts ``tests/`` on
``sys.path`` for the root ``conftest.py``). Fixtures built from them live in ``tests/conftest.py``.

Simulated scans are cached per process (``functools.cache``): callers must not modify their arrays in
place (``dataclasses.replace`` / ``ScanData.subset`` give new scans).
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from ptychopinn.data.scan import ScanData
    from ptychopinn.models.pinn import PtychoPINN

N = 32  # the pattern size of every small simulated scan here


# ----------------------------------------------------------------------------------------- simulated scans
@functools.cache
def sim_scan(seed: int, size: int = 64, kind: str = "lines") -> ScanData:
    """A simulated N=32 scan at 1e6 photons (ScanData: amplitude diffraction, positions (x, y), probe, truth
    object ``size`` x ``size``); the simulator's default overlap 0.7 and jitter 0.5."""
    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_scan

    return simulate_scan(SimulationConfig(N=N, object_size=size, object_kind=kind, seed=seed, nphotons=1e6))


@functools.cache
def tiny_scan(**changes: Any) -> ScanData:
    """The smallest scan that still trains: N=32, 24 points on a 64 x 64 'lines' object, overlap 0.5,
    1e6 photons, seed 1 (``changes`` override any SimulationConfig field, e.g. ``nphotons=1e2``)."""
    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_scan

    base = SimulationConfig(N=N, object_size=64, object_kind="lines", overlap=0.5, nphotons=1e6, n_points=24,
                            seed=1)
    return simulate_scan(base.replace(**changes))


@functools.cache
def astronaut_scan(seed: int = 1, nphotons: float = 1e9) -> ScanData:
    """The refinement scan: N=32, 441 points (overlap 0.7, jitter 0.5) on a 96 x 96 natural image (amplitude
    'astronaut', phase 'coins') at ``nphotons`` per pattern (default 1e9: iterative refinement reaches the
    truth on it within tens of iterations)."""
    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_scan

    return simulate_scan(SimulationConfig(N=N, object_size=96, object_kind="image", image_name="astronaut",
                                          phase_image="coins", overlap=0.7, jitter=0.5, nphotons=nphotons, seed=seed))


def raster_poisson_scan(m: int, seed: int = 0, with_obj: bool = True, n: int = N) -> ScanData:
    """``m`` points on a square raster of 3 px steps from (20, 20), a Gaussian probe and Poisson(5) counts
    as amplitudes ``[m, n, n]`` float32 (no physics: for data plumbing, memory and DDP tests); with
    ``with_obj`` a random 90 x 90 phase object (drawn before the counts)."""
    from ptychopinn.data.scan import ScanData

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(m)))
    i = np.arange(m)
    pos = np.stack([(i % side) * 3.0 + 20, (i // side) * 3.0 + 20], axis=1)
    yy, xx = np.mgrid[:n, :n] - n / 2
    probe = np.exp(-(xx**2 + yy**2) / 40.0).astype(np.complex64)
    obj = np.exp(1j * rng.uniform(-1, 1, (90, 90))).astype(np.complex64) if with_obj else None
    diff = np.sqrt(rng.poisson(5.0, size=(m, n, n))).astype(np.float32)
    return ScanData(diffraction=diff, positions=pos, probe=probe, obj=obj, metadata={"source": "test"})


def counts_of(scan: ScanData, dtype: Any = np.uint16) -> np.ndarray:
    """The scan's diffraction as photon counts (amplitude squared, rounded) in ``dtype``."""
    return np.round(scan.diffraction.astype(np.float64) ** 2).astype(dtype)


def write_ptychodus_npz(path: Path, scan: ScanData, diff3d: np.ndarray) -> Path:
    """Write ``path`` with exactly the keys, shapes and dtypes of ptychodus 1.7.0's training-data export
    (``save_ptychopinn_training_data``): probe ``(1, N, N)`` modes first, positions in float64."""
    x = scan.positions[:, 0].astype(np.float64)
    y = scan.positions[:, 1].astype(np.float64)
    np.savez(path, xcoords=x, ycoords=y, xcoords_start=x, ycoords_start=y, diff3d=diff3d,
             bad_pixels=np.zeros(diff3d.shape[-2:], dtype=bool), probeGuess=scan.probe[None].astype(np.complex64),
             objectGuess=scan.obj.astype(np.complex64), scan_index=np.zeros(len(x), dtype=int))
    return path


def write_tike(path: Path, *, compress: bool = True, **arrays: Any) -> Path:
    """``arrays`` (e.g. ``data``, ``scan``, ``probe``) saved as tike does: ``numpy.savez``, then the whole file
    compressed with bzip2 when ``compress`` (``.npz.bz2``). Object arrays are pickled, as numpy writes them."""
    import bz2
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(bz2.compress(buf.getvalue(), 1) if compress else buf.getvalue())
    return path


def tike_forward(obj: np.ndarray, corners: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """tike's own model of the counts, written from its documentation: pattern ``k`` is ``|fft2(probe *
    obj[r:r+N, c:c+N])|**2`` with the orthonormal UNSHIFTED FFT (zero frequency at pixel (0, 0)) for the integer
    top-left corner ``(r, c) = corners[k]`` (row, column). ``[M, N, N]`` float32."""
    n = probe.shape[-1]
    out = [np.abs(np.fft.fft2(probe * obj[r:r + n, c:c + n], norm="ortho")) ** 2 for r, c in corners.astype(int)]
    return np.stack(out).astype(np.float32)


# ------------------------------------------------------------------------------------------ hostile input
class PickleMarker:
    """Unpickling this creates the file ``path`` (the payload of a malicious pickle): a test that plants it and
    then finds no file proves that nothing was unpickled."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def write_reference_tf_bundle(directory: Path) -> Path:
    """``directory`` laid out as an extracted model of the reference TensorFlow backend (``manifest.dill`` and
    ``diffraction_to_obj/model.keras``, contents irrelevant): what the readers must recognise and refuse."""
    (directory / "diffraction_to_obj").mkdir(parents=True)
    (directory / "manifest.dill").write_bytes(b"\x80\x04.")
    (directory / "diffraction_to_obj" / "model.keras").write_bytes(b"PK")
    return directory


# ----------------------------------------------------------------------------------------------- models
def untrained_model(gridsize: int = 1, intensity_scale: float = 30.0, seed: int = 0) -> PtychoPINN:
    """A randomly initialised PtychoPINN (N=32, n_filters_scale=1, probe of ``sim_scan(1)``), in eval mode:
    fast, deterministic, untrained."""
    import torch

    from ptychopinn.config import ModelConfig
    from ptychopinn.models.pinn import PtychoPINN

    torch.manual_seed(seed)
    probe = sim_scan(1).probe
    return PtychoPINN(ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1), probe, intensity_scale).eval()


def poisson_before_and_after_steps(model: PtychoPINN, x: torch.Tensor, offsets: torch.Tensor, steps: int,
                                   lr: float = 1e-3) -> tuple[float, float]:
    """The Poisson loss of ``model`` on one batch (``x`` ``[B, C, N, N]`` normalised amplitudes, ``offsets``
    ``[B, C, 2]``) before and after ``steps`` Adam steps on that batch with the default training loss."""
    import torch

    from ptychopinn.config import TrainingConfig
    from ptychopinn.training.losses import compute_losses

    tc = TrainingConfig()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with torch.no_grad():
        start = float(compute_losses(model, x, offsets, tc)["poisson"])
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        compute_losses(model, x, offsets, tc)["loss"].backward()
        opt.step()
    with torch.no_grad():
        end = float(compute_losses(model, x, offsets, tc)["poisson"])
    return start, end


# ------------------------------------------------------------------------------------ comparing with truth
def norm_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays of the same shape (0 when either is constant)."""
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def compare_with_truth(canvas: np.ndarray, truth: np.ndarray, margin: int = 2) -> dict[str, Any]:
    """Quality and orientation of a stitched canvas on the truth's pixel grid.

    Works on the bounding box of the covered (nonzero) pixels shrunk by ``margin``; removes the global
    phase offset. Returns ``phase_corr``/``amp_corr`` (Pearson, recon vs truth), ``shift`` (dy, dx) from
    ``skimage.registration.phase_cross_correlation`` of the phase images (0 = no displacement), and
    ``flipped_phase_corr``: Pearson of the recon phase with the truth flipped up-down, left-right and
    transposed (each must correlate worse than the unflipped truth).
    """
    from skimage.registration import phase_cross_correlation

    assert canvas.shape == truth.shape
    rows = np.flatnonzero(np.abs(canvas).sum(axis=1) > 0)
    cols = np.flatnonzero(np.abs(canvas).sum(axis=0) > 0)
    r0, r1 = rows[0] + margin, rows[-1] + 1 - margin
    c0, c1 = cols[0] + margin, cols[-1] + 1 - margin
    rec = canvas[r0:r1, c0:c1]
    covered = np.abs(rec) > 0
    assert covered.mean() > 0.99, "the scanned box must be fully covered"

    def box(t: np.ndarray) -> np.ndarray:
        return t[r0:r1, c0:c1]

    t = box(truth)
    rot = np.exp(-1j * np.angle(np.sum(rec * np.conj(t))))  # remove the global phase offset
    rec_phase = np.angle(rec * rot)
    t_phase = np.angle(t)
    shift, _, _ = phase_cross_correlation(t_phase, rec_phase, upsample_factor=10, normalization=None)
    flips = {"updown": truth[::-1, :], "leftright": truth[:, ::-1], "transpose": truth.T}
    return {
        "phase_corr": norm_corr(rec_phase, t_phase),
        "amp_corr": norm_corr(np.abs(rec), np.abs(t)),
        "shift": (float(shift[0]), float(shift[1])),
        "flipped_phase_corr": {k: norm_corr(rec_phase, np.angle(box(v))) for k, v in flips.items()},
        "box": (int(r0), int(r1), int(c0), int(c1)),
    }


def compare_on_scan_box(canvas: np.ndarray, truth: np.ndarray, xy: np.ndarray) -> dict[str, float]:
    """Amplitude and phase correlation (``amp``, ``phase``) with the truth over the box spanned by the scan
    positions ``xy`` ``[M, 2]`` (x, y) in object pixels, after removing the global phase offset.

    ``canvas`` is on the object's own grid (same shape as ``truth``), or a PtychoPINN-Torch canvas: odd sides
    with its centre pixel on the midpoint of the scan's bounding box (README pixel-convention table)."""
    if canvas.shape == truth.shape:
        r0 = c0 = 0
    else:
        mid = 0.5 * (xy.min(axis=0) + xy.max(axis=0))
        r0 = int(round(mid[1] - (canvas.shape[0] - 1) / 2))
        c0 = int(round(mid[0] - (canvas.shape[1] - 1) / 2))
    (x_lo, y_lo), (x_hi, y_hi) = np.ceil(xy.min(axis=0)).astype(int), np.floor(xy.max(axis=0)).astype(int)
    rec = canvas[y_lo - r0:y_hi - r0 + 1, x_lo - c0:x_hi - c0 + 1]
    t = truth[y_lo:y_hi + 1, x_lo:x_hi + 1]
    assert rec.shape == t.shape and (np.abs(rec) > 0).mean() > 0.99
    rec = rec * np.exp(-1j * np.angle(np.sum(rec * np.conj(t))))
    return {"amp": norm_corr(np.abs(rec), np.abs(t)), "phase": norm_corr(np.angle(rec), np.angle(t))}


def scanned_region(scan: ScanData) -> np.ndarray:
    """``[H, W]`` bool mask of the truth's pixels inside the bounding box of the scan positions."""
    truth = scan.obj
    lo = np.floor(scan.positions.min(axis=0)).astype(int)
    hi = np.ceil(scan.positions.max(axis=0)).astype(int)
    mask = np.zeros(truth.shape, bool)
    mask[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = True
    return mask


def ssim_on_scanned_region(obj: np.ndarray, origin: tuple[float, float], scan: ScanData) -> tuple[float, float]:
    """(amplitude SSIM, phase SSIM) of a canvas placed at ``origin`` against ``scan.obj`` on the scanned
    region, after registration and phase-ramp removal."""
    from ptychopinn.metrics import evaluate, on_truth_grid

    full, _ = on_truth_grid(obj, np.ones(obj.shape, np.float32), origin, scan.obj.shape)
    m = evaluate(full, scan.obj, mask=scanned_region(scan), remove_ramp=True)
    return m["amplitude"]["ssim"], m["phase"]["ssim"]


class CaseTimeout(Exception):
    """A hostile case that did not finish in time (it hangs)."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """SIGALRM after ``seconds``: a blocked open() or read() (e.g. of a named pipe) is interrupted and the case
    fails with :class:`CaseTimeout`."""
    def on_alarm(signum: int, frame: object) -> None:
        raise CaseTimeout(f"did not finish within {seconds} s (hangs)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
