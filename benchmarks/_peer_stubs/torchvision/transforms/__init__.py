"""``GaussianBlur`` with torchvision's tensor semantics (benchmark-only stand-in, see ../../README.md).

torchvision's ``GaussianBlur(kernel_size, sigma)`` draws ``sigma`` uniformly from ``[min, max]`` on
every call, builds the normalised kernel ``exp(-x**2 / (2 sigma**2))`` on
``x = linspace(-(k-1)/2, (k-1)/2, k)`` and convolves each ``[..., H, W]`` image separably after
``reflect`` padding by ``k // 2``. Implemented here for real float tensors; anything else raises.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["GaussianBlur"]


def _pair(v: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(v, (int, float)):
        return float(v), float(v)
    if isinstance(v, Sequence) and len(v) in (1, 2):
        return float(v[0]), float(v[-1])
    raise ValueError(f"{name}: expected a number or a sequence of one or two numbers, got {v!r}")


def _kernel1d(k: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    half = (k - 1) * 0.5
    x = torch.linspace(-half, half, steps=k, dtype=dtype, device=device)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


class GaussianBlur(torch.nn.Module):
    """Gaussian blur of ``[..., H, W]`` real float tensors (torchvision's tensor code path)."""

    def __init__(self, kernel_size: int | Sequence[int], sigma: float | Sequence[float] = (0.1, 2.0)) -> None:
        super().__init__()
        kx, ky = _pair(kernel_size, "kernel_size")
        self.kernel_size = (int(kx), int(ky))
        for k in self.kernel_size:
            if k <= 0 or k % 2 == 0:
                raise ValueError("kernel_size: expected positive odd integers")
        lo, hi = _pair(sigma, "sigma")
        if not 0.0 < lo <= hi:
            raise ValueError("sigma: expected 0 < min <= max")
        self.sigma = (lo, hi)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor) or not img.is_floating_point() or img.ndim < 2:
            raise TypeError("GaussianBlur stand-in: expected a real floating-point tensor [..., H, W]; the real "
                            "torchvision is not installed in this benchmark environment")
        s = torch.empty(1).uniform_(self.sigma[0], self.sigma[1]).item()
        kx, ky = self.kernel_size
        shape = img.shape
        x = img.reshape(-1, 1, shape[-2], shape[-1])
        x = torch.nn.functional.pad(x, [kx // 2, kx // 2, ky // 2, ky // 2], mode="reflect")
        gx = _kernel1d(kx, s, img.dtype, img.device)
        gy = _kernel1d(ky, s, img.dtype, img.device)
        x = torch.nn.functional.conv2d(x, gx.view(1, 1, 1, kx))
        x = torch.nn.functional.conv2d(x, gy.view(1, 1, ky, 1))
        return x.reshape(shape)

    def __repr__(self) -> str:
        return f"GaussianBlur(kernel_size={self.kernel_size}, sigma={self.sigma}) [ptychopinn benchmark stand-in]"
