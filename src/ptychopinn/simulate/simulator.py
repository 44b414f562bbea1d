"""Simulated diffraction through the training forward model, with Poisson photon noise.

Physics (identical to what training fits; there is no second implementation):

1. object patches ``O = extract_exact(obj, positions, N)``: the integer window nearest to each position
   moved by the remaining fraction in Fourier space (no interpolation blur; the rule refinement and
   stitching use too, :mod:`ptychopinn.physics.shift`);
2. expected amplitude in normalised units ``A = ForwardModel(probe, probe_scale)(O)``, i.e.
   ``|fft2c(P_norm * O)|`` with the probe rescaled to energy ``(probe_scale * N / 4)**2``;
   with ``oversample = s > 1`` the exit waves are instead formed on a grid ``s`` times finer (object
   and probe Fourier-interpolated, positions times ``s``) and only the central ``N x N`` of their
   ``sN x sN`` far field is kept, as a real detector would record: data that do not follow the
   reconstruction's pixel model (no "inverse crime"). The ground-truth patches stay on the
   reconstruction grid;
3. dose scale ``c = sqrt(nphotons / mean_over_patterns(sum_pixels A**2))`` over the *whole* scan, so
   the expected total count per pattern is ``nphotons`` on average;
4. expected counts ``(c * A)**2``; with ``poisson`` the counts are drawn from Poisson distributions
   with those means (float64 rates, exact for any dose numpy supports, up to ~1e18 per pixel);
5. stored amplitude ``sqrt(counts)`` float32 (the NPZ contract stores amplitude, never intensity).

The noise of pattern ``m`` comes from the generator ``default_rng([seed, tag, m // 256])``, so the
result does not depend on ``batch_size`` and two runs with the same seed are bit-identical.
Memory: the forward pass runs in batches of ``batch_size`` patterns and the noise in blocks of 256,
so only the ``[M, N, N]`` outputs scale with the scan size.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch

from ptychopinn.config import ModelConfig, SimulationConfig
from ptychopinn.config_fields import is_int
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.physics.fft import far_field_amplitude
from ptychopinn.physics.forward import ForwardModel
from ptychopinn.physics.probe import normalize_probe
from ptychopinn.physics.shift import extract_exact, fourier_shift, split_positions, window_index
from ptychopinn.simulate.objects import make_object
from ptychopinn.simulate.probes import make_probe
from ptychopinn.simulate.scan import (
    probe_diameter,
    raster_positions,
    spiral_positions,
    step_for_overlap,
    valid_area,
)

_NOISE_BLOCK = 256  # patterns per noise generator: fixed, so results do not depend on batch_size
_NOISE_STREAM = 606
_OBJECT_BYTES_PER_PIXEL = 64
_MAX_RATE = 1e18  # numpy's Poisson sampler refuses means above ~9.2e18


def _check_inputs(obj: Any, probe: Any, positions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o = np.asarray(obj)
    if o.ndim != 2 or o.size == 0 or not np.issubdtype(o.dtype, np.number):
        raise DataFormatError(f"obj: expected a 2-D [H, W] complex object, found {describe_array(o)}; "
                              "pass a single object layer")
    p = np.asarray(probe)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] % 2 or not np.issubdtype(p.dtype, np.number):
        raise DataFormatError(f"probe: expected a square [N, N] complex probe with N even, found "
                              f"{describe_array(p)}; crop or pad it to an even square")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise DataFormatError(f"positions: expected shape (M, 2) ordered (x, y) with M >= 1, found "
                              f"{describe_array(pos)}; stack them as np.stack([x, y], axis=1)")
    for name, a in (("obj", o), ("probe", p), ("positions", pos)):
        if not np.all(np.isfinite(a)):
            raise DataFormatError(f"{name}: expected finite values, found NaN/Inf; clean the input")
    return o.astype(np.complex64), p.astype(np.complex64), pos


def simulate_diffraction(
    obj: np.ndarray,
    probe: np.ndarray,
    positions: np.ndarray,
    *,
    nphotons: float,
    poisson: bool = True,
    seed: int = 0,
    probe_scale: float = 4.0,
    batch_size: int = 1024,
    progress: bool = False,
    oversample: int = 1,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Diffraction amplitudes of an object scanned by a probe (module docstring for the physics).

    Args:
        obj: ``[H, W]`` complex object (transmission).
        probe: ``[N, N]`` complex probe, any scale (normalised by the forward model), N even.
        positions: ``[M, 2]`` ``(x, y)`` probe centres in object pixels (sub-pixel allowed).
        nphotons: expected mean total photon count per pattern (> 0).
        poisson: draw Poisson counts (True) or return the noiseless expected amplitude ``c * A``.
        seed: integer seed of the noise.
        probe_scale: probe normalisation of the forward model (as in :class:`ModelConfig`).
        batch_size: patterns per forward-model batch (memory only; results do not depend on it).
        progress: show a tqdm progress bar on stderr (hidden when stderr is not a terminal).
        oversample: ``s >= 1``; exit waves on an ``s`` times finer grid, central ``N x N`` of the far
            field kept (``s = 1`` is the pixel model exactly).

    Returns:
        ``(amplitude [M, N, N] float32 = sqrt(counts), patches [M, N, N] complex64 object patches,
        dose_scale c)``; noiseless with ``oversample=1``,
        ``amplitude == c * ForwardModel(probe, probe_scale)(patches)``.

    Raises:
        DataFormatError: malformed arrays or an object that gives all-zero patterns.
        ConfigError: bad nphotons, batch_size or probe_scale.
    """
    o, p, pos = _check_inputs(obj, probe, positions)
    try:
        nphotons = float(nphotons)
    except (TypeError, ValueError):
        nphotons = float("nan")
    if not (math.isfinite(nphotons) and nphotons > 0):
        raise ConfigError(f"nphotons: expected a positive finite mean count per pattern, got {nphotons!r}; "
                          "e.g. 1e6")
    if not is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size: expected a positive integer, got {batch_size!r}; e.g. 1024")
    if not (math.isfinite(float(probe_scale)) and probe_scale > 0):
        raise ConfigError(f"probe_scale: expected a positive number, got {probe_scale!r}; the default is 4.0")
    if not is_int(oversample) or not 1 <= oversample <= 8:
        raise ConfigError(f"oversample: expected an integer from 1 to 8, got {oversample!r}; use 1 (pixel model) "
                          "or 2 (benchmark data)")
    m, n = pos.shape[0], p.shape[0]
    corner, _ = split_positions(pos, n)
    if corner.min() < 0 or corner[:, 0].max() + n > o.shape[1] or corner[:, 1].max() + n > o.shape[0]:
        raise DataFormatError(f"positions: every {n}x{n} patch must lie inside the {o.shape[0]}x{o.shape[1]} "
                              "object; keep probe centres at least N/2 pixels from the edges")
    from tqdm.auto import tqdm

    model = ForwardModel(torch.from_numpy(p), probe_scale=float(probe_scale))
    obj_t = torch.from_numpy(o)
    fine = _FineGrid(o, p, int(oversample), float(probe_scale)) if oversample > 1 else None
    amplitude = np.empty((m, n, n), dtype=np.float32)
    patches = np.empty((m, n, n), dtype=np.complex64)
    n_batches = -(-m // int(batch_size))
    n_blocks = -(-m // _NOISE_BLOCK) if poisson else 0
    bar = tqdm(total=n_batches + n_blocks, desc="simulate", unit="batch", file=sys.stderr,
               disable=None if progress else True, leave=False)
    try:
        # pass 1: forward model; the dose scale needs the energy of the whole scan first
        energy = 0.0
        with torch.no_grad():
            for start in range(0, m, int(batch_size)):
                stop = min(start + int(batch_size), m)
                patch = extract_exact(obj_t, pos[start:stop], n).to(torch.complex64)
                if fine is None:
                    amp = model(patch[:, None])[:, 0]
                else:
                    amp = fine.far_field(pos[start:stop])
                patches[start:stop] = patch.numpy()
                amplitude[start:stop] = amp.numpy()
                energy += float(amp.to(torch.float64).square().sum())
                bar.update(1)
        mean_energy = energy / m
        if not mean_energy > 0:
            raise DataFormatError("obj: expected some transmission under the scan positions, found all-zero "
                                  "patterns; check the object and that positions are in object pixels")
        dose_scale = math.sqrt(nphotons / mean_energy)
        # pass 2: scale (and sample) block by block, in place
        if not poisson:
            amplitude *= np.float32(dose_scale)
        else:
            for block, start in enumerate(range(0, m, _NOISE_BLOCK)):
                stop = min(start + _NOISE_BLOCK, m)
                rates = np.square(amplitude[start:stop].astype(np.float64) * dose_scale)
                if float(rates.max()) > _MAX_RATE:
                    raise ConfigError(f"nphotons: expected at most ~{_MAX_RATE:.0e} counts in a pixel, got "
                                      f"{float(rates.max()):.3g} with nphotons={nphotons:g}; lower nphotons")
                rng = np.random.default_rng([int(seed), _NOISE_STREAM, block])
                amplitude[start:stop] = np.sqrt(rng.poisson(rates)).astype(np.float32)
                bar.update(1)
    finally:
        bar.close()
    return amplitude, patches, float(dose_scale)


class _FineGrid:
    """Exit waves on a grid ``s`` times finer than the reconstruction's, for oversampled data.

    The object ``[H, W]`` and probe ``[N, N]`` are Fourier-interpolated (fine pixel ``j`` is coarse
    coordinate ``j / s``; the object is mirror-padded first so its edges do not ring); positions are
    multiplied by ``s``; each ``sN x sN`` exit wave is propagated with the orthonormal FFT and the
    central ``N x N`` of its far field (the same spatial frequencies as the coarse grid's) is kept.
    """

    def __init__(self, obj: np.ndarray, probe: np.ndarray, s: int, probe_scale: float) -> None:
        n = probe.shape[0]
        self.s, self.n = s, n
        pad = n // 2
        padded = np.pad(obj.astype(np.complex128), pad, mode="reflect")
        fine = _fourier_upsample(padded, s)[s * pad:s * (pad + obj.shape[0]), s * pad:s * (pad + obj.shape[1])]
        self.obj = torch.from_numpy(fine.astype(np.complex64))
        fine_probe = torch.from_numpy(_fourier_upsample(probe.astype(np.complex128), s).astype(np.complex64))
        self.probe = normalize_probe(fine_probe, probe_scale)

    def far_field(self, positions: np.ndarray) -> torch.Tensor:
        """Central ``[P, N, N]`` float32 far-field amplitudes of the fine exit waves at ``positions``."""
        s, n = self.s, self.n
        corner, frac = split_positions(positions * s, s * n)
        corner = np.clip(corner, 0, [self.obj.shape[1] - s * n, self.obj.shape[0] - s * n])
        windows = self.obj.reshape(-1)[window_index(torch.from_numpy(corner), s * n, int(self.obj.shape[1]))]
        probes = fourier_shift(self.probe.expand(len(positions), s * n, s * n), torch.from_numpy(frac))
        amp = far_field_amplitude(probes * windows)
        lo = (s * n) // 2 - n // 2
        return amp[:, lo:lo + n, lo:lo + n]


def _fourier_upsample(a: np.ndarray, s: int) -> np.ndarray:
    """Band-limited interpolation of ``[h, w]`` complex to ``[s h, s w]``; output pixel ``j`` samples
    input coordinate ``j / s`` (sample 0 stays in place)."""
    h, w = a.shape
    spec = np.fft.fftshift(np.fft.fft2(a))
    big = np.zeros((s * h, s * w), np.complex128)
    r0, c0 = (s * h) // 2 - h // 2, (s * w) // 2 - w // 2
    big[r0:r0 + h, c0:c0 + w] = spec
    return np.fft.ifft2(np.fft.ifftshift(big)) * (s * s)


def _check_override(obj: Any, config: SimulationConfig) -> np.ndarray:
    o = np.asarray(obj)
    if o.ndim != 2 or not np.issubdtype(o.dtype, np.number) or not np.all(np.isfinite(o)):
        raise DataFormatError(f"object_override: expected a finite 2-D [H, W] complex object, found "
                              f"{describe_array(o)}; pass a single object layer")
    valid_area(o.shape, config.N)  # raises ConfigError when one patch does not fit
    return o.astype(np.complex64)


def simulate_scan(
    config: SimulationConfig,
    *,
    object_override: np.ndarray | None = None,
    progress: bool = False,
) -> ScanData:
    """Simulate a whole scan from a :class:`SimulationConfig`.

    The object is ``make_object(config.object_kind, ...)`` (or ``object_override``, ``[H, W]`` complex),
    the probe ``make_probe(config.probe_kind, config.N, diameter=config.probe_diameter)``; the scan
    step is ``step_for_overlap(probe_diameter(probe), config.overlap)`` (90 %-energy probe diameter),
    and the patterns come from :func:`simulate_diffraction` with ``probe_scale = 4``, the
    :class:`~ptychopinn.config.ModelConfig` default.

    Returns:
        A validated :class:`ScanData`: ``diffraction`` ``[M, N, N]`` float32 sqrt(counts),
        ``positions`` and ``positions_start`` ``[M, 2]`` float64 ``(x, y)`` pixels, ``probe`` ``[N, N]``
        complex64 (peak 1), ``obj`` ``[H, W]`` complex64 ground truth, ``scan_index`` ``[M]`` int64
        zeros, ``patches`` ``[M, N, N]`` complex64 ground-truth object patches (not illuminated), and
        ``metadata`` with ``nphotons``,
        ``dose_scale``, ``probe_scale``, ``simulated``, ``poisson``, ``config``, ``seed``,
        ``probe_diameter_px`` and ``scan_step_px``.
    """
    if not isinstance(config, SimulationConfig):
        raise ConfigError(f"config: expected a SimulationConfig, got {type(config).__name__}; "
                          "build one with SimulationConfig(...)")
    from ptychopinn.limits import check_memory

    override = None if object_override is None else _check_override(object_override, config)
    shape = (config.object_size, config.object_size) if override is None else override.shape
    probe = make_probe(config.probe_kind, config.N, diameter=config.probe_diameter)
    diameter = probe_diameter(probe)
    step = step_for_overlap(diameter, config.overlap)
    if config.scan == "raster":
        positions = raster_positions(shape, config.N, step, jitter=config.jitter,
                                     n_points=config.n_points, seed=config.seed)
    else:
        positions = spiral_positions(shape, config.N, step, n_points=config.n_points, seed=config.seed)
    # Checked before anything large exists: the object (complex, with float64 amplitude/phase fields and
    # resampling temporaries while it is made) and the float32 patterns plus complex64 patches, [M, N, N] each.
    m = positions.shape[0]
    check_memory(float(shape[0]) * float(shape[1]) * _OBJECT_BYTES_PER_PIXEL + float(m) * config.N**2 * 12,
                 f"a simulated {shape[1]} x {shape[0]} pixel object scanned at {m} points of {config.N} x "
                 f"{config.N} pixels", "use a smaller object_size (--object-size), fewer points (n_points) or less "
                 "overlap", ConfigError)
    if override is None:
        obj = make_object(config.object_kind, config.object_size, amplitude_range=config.amplitude_range,
                          phase_range=config.phase_range, image_name=config.image_name, seed=config.seed,
                          phase_image=config.phase_image)
    else:
        obj = override
    probe_scale = ModelConfig().probe_scale  # the training default, so the scan matches it
    amplitude, patches, dose_scale = simulate_diffraction(
        obj, probe, positions, nphotons=float(config.nphotons), poisson=config.poisson, seed=config.seed,
        probe_scale=probe_scale, progress=progress, oversample=config.oversample,
    )
    metadata = {
        "nphotons": float(config.nphotons),
        "dose_scale": dose_scale,
        "probe_scale": probe_scale,
        "simulated": True,
        "poisson": bool(config.poisson),
        "config": config.to_dict(),
        "seed": int(config.seed),
        "probe_diameter_px": diameter,
        "scan_step_px": step,
        "oversample": int(config.oversample),
    }
    return ScanData(
        diffraction=amplitude,
        positions=positions,
        probe=probe,
        obj=obj,
        positions_start=positions.copy(),
        scan_index=np.zeros(positions.shape[0], dtype=np.int64),
        patches=patches,
        metadata=metadata,
    )
