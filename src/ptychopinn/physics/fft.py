"""Centred, orthonormal 2-D Fourier transforms: the one home of the shift convention.

Convention: the zero spatial frequency sits at pixel ``(N//2, N//2)`` of a transformed array
(``fftshift``), and so does the real-space origin (``ifftshift`` before the transform). With
``norm='ortho'`` the transforms are unitary: Parseval holds, ``sum |fft2c(x)|**2 == sum |x|**2``.
The measured quantity, the far-field amplitude, is ``|fft2c(psi)|``; since the input
``ifftshift`` only multiplies the spectrum by a phase for even sizes, the amplitude can be computed
without it (:func:`far_field_amplitude`), which saves one pass over the data in the training loop.
"""

from __future__ import annotations

import torch

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal FFT over the last two axes.

    ``x``: ``[..., N, N]`` complex (or real) tensor, real-space origin at ``(N//2, N//2)``.
    Returns ``[..., N, N]`` complex, zero frequency at ``(N//2, N//2)``.
    """
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (centred, orthonormal). ``[..., N, N]`` complex in and out."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)


def far_field_amplitude(psi: torch.Tensor) -> torch.Tensor:
    """Far-field (Fraunhofer) amplitude ``|fft2c(psi)|`` of an exit wave.

    ``psi``: ``[..., N, N]`` complex exit wave (N even). Returns ``[..., N, N]`` real, same
    precision as ``psi``, zero frequency at ``(N//2, N//2)``; ``sum(out**2) == sum(|psi|**2)``.
    """
    return torch.fft.fftshift(torch.fft.fft2(psi, norm="ortho").abs(), dim=_DIMS)


def fft2u(psi: torch.Tensor) -> torch.Tensor:
    """Orthonormal FFT in unshifted order: ``[..., N, N]`` complex in and out, zero frequency at pixel
    ``(0, 0)``. The iterative engines' fast path: ``|fft2u(psi)| == ifftshift(|fft2c(psi)|)`` (the
    input shift of :func:`fft2c` only multiplies the spectrum by a phase), so measured amplitudes are
    moved to this order once (:func:`to_unshifted`) instead of shifting every exit wave."""
    return torch.fft.fft2(psi, norm="ortho")


def ifft2u(far: torch.Tensor) -> torch.Tensor:
    """Inverse (and adjoint) of :func:`fft2u`. ``[..., N, N]`` complex in and out."""
    return torch.fft.ifft2(far, norm="ortho")


def to_unshifted(a: torch.Tensor) -> torch.Tensor:
    """Move centred far-field data (zero frequency at ``(N//2, N//2)``) to the unshifted order of
    :func:`fft2u` (zero frequency at ``(0, 0)``). ``[..., N, N]``, any dtype."""
    return torch.fft.ifftshift(a, dim=_DIMS)
