r"""Blur and resampling kernels (all normalised to sum 1, returned as float64 by default).

* :func:`gaussian_kernel`, :func:`uniform_kernel`: 1-D taps for :class:`~zsir.operators.SeparableBlur`.
* :func:`gaussian_kernel_2d`, :func:`motion_kernel`: 2-D kernels for :class:`~zsir.operators.CircularBlur`.
* :func:`bicubic_kernel`: the Keys cubic taps of DDRM's ``sr_bicubic`` (used by :class:`~zsir.operators.BicubicSR`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gaussian_kernel", "uniform_kernel", "gaussian_kernel_2d", "bicubic_kernel", "keys_cubic", "motion_kernel"]


def _check_size(size: int, name: str = "size", minimum: int = 1) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {size!r}")
    return size


def gaussian_kernel(size: int, std: float, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""1-D Gaussian taps ``exp(-x^2 / (2 std^2))`` at ``x = i - (size - 1) / 2``, normalised to sum 1.

    ``std`` is in pixels. DDRM's / CM4IR's ``deblur_gauss`` is ``gaussian_kernel(5, 10.0)`` (weights 0.198-0.202,
    almost a box blur); the RDMD/DPS Gaussian blur is ``gaussian_kernel_2d(61, 3.0)``.
    """
    _check_size(size)
    if not std > 0 or not math.isfinite(std):
        raise ValueError(f"std: expected a positive finite float (pixels), got {std!r}")
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2.0 * std**2))
    return (k / k.sum()).to(dtype)


def uniform_kernel(size: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """1-D box taps ``1/size`` (DDRM's ``deblur_uni`` is ``uniform_kernel(9)``)."""
    _check_size(size)
    return torch.full((size,), 1.0 / size, dtype=dtype)


def gaussian_kernel_2d(size: int, std: float, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Isotropic ``size x size`` Gaussian (outer product of :func:`gaussian_kernel`), normalised to sum 1."""
    g = gaussian_kernel(size, std, dtype=torch.float64)
    return torch.outer(g, g).to(dtype)


def keys_cubic(x: Tensor, a: float = -0.5) -> Tensor:
    r"""Keys' cubic convolution kernel ``W(x)`` with parameter ``a`` (``a = -0.5``: the usual "bicubic")::

    W(x) = (a+2)|x|^3 - (a+3)|x|^2 + 1          for |x| <= 1
         = a|x|^3 - 5a|x|^2 + 8a|x| - 4a          for 1 < |x| < 2
         = 0                                      otherwise
    """
    t = x.abs()
    inner = (a + 2) * t**3 - (a + 3) * t**2 + 1
    outer = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def bicubic_kernel(factor: int, a: float = -0.5, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""The ``4 factor`` anti-aliasing bicubic taps of DDRM's ``sr_bicubic{factor}``, normalised to sum 1.

    Tap ``i`` sits at ``x = (i - floor(4 factor / 2) + 0.5) / factor`` and weighs ``keys_cubic(x, a)``.
    """
    _check_size(factor, "factor")
    n = 4 * factor
    x = (torch.arange(n, dtype=torch.float64) - n // 2 + 0.5) / factor
    k = keys_cubic(x, a)
    return (k / k.sum()).to(dtype)


def motion_kernel(
    size: int,
    intensity: float = 0.5,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""A random camera-shake kernel: a smooth random trajectory rasterised onto a ``size x size`` grid.

    zsir's own generator (the ``motionblur`` package used by DPS/RDMD is not on PyPI; this is a different random
    family, so kernels are not bit-compatible with theirs). The path ``p(t)``, ``t in [0, 1]``, has heading
    ``theta(t) = theta_0 + int omega`` where the angular velocity ``omega`` is a Brownian motion scaled by
    ``4 pi intensity`` and the speed is ``exp(intensity b(t))`` for another Brownian motion ``b``; so
    ``intensity = 0`` gives a straight linear-motion blur and larger values give curlier, jerkier paths. The
    path is centred at its centroid, scaled to a random radius in ``[0.5, 1] * (size - 1) / 2`` and splatted
    bilinearly (sub-pixel, equal exposure per time sample), then normalised to sum 1. Bilinear splatting keeps
    the first moment, so the kernel's centroid is exactly the centre pixel ``((size - 1) / 2, (size - 1) / 2)``.

    Args:
        size: kernel side in pixels (>= 3; RDMD/DPS use 61).
        intensity: irregularity in ``[0, 1]`` (RDMD/DPS use 0.5).
        generator: a CPU ``torch.Generator``; the same seed gives the same kernel.

    Returns:
        ``(size, size)`` kernel, non-negative, summing to 1.
    """
    _check_size(size, minimum=3)
    if not 0.0 <= float(intensity) <= 1.0:
        raise ValueError(f"intensity: expected a float in [0, 1], got {intensity!r}")
    n = 8 * size
    dt = 1.0 / n
    f64 = torch.float64
    theta0 = 2 * math.pi * torch.rand((), generator=generator, dtype=f64)
    omega = torch.cumsum(torch.randn(n, generator=generator, dtype=f64), 0) * math.sqrt(dt) * 4 * math.pi * intensity
    theta = theta0 + torch.cumsum(omega, 0) * dt
    log_speed = torch.cumsum(torch.randn(n, generator=generator, dtype=f64), 0) * math.sqrt(dt) * intensity
    radius_fraction = 0.5 + 0.5 * torch.rand((), generator=generator, dtype=f64)

    step = torch.exp(log_speed)[:, None] * torch.stack([torch.sin(theta), torch.cos(theta)], 1) * dt
    path = torch.cumsum(step, 0)  # (n, 2) as (row, col)
    path = path - path.mean(0)
    centre = (size - 1) / 2
    path = centre + path * (radius_fraction * centre / path.abs().max())

    base = path.floor().clamp(0, size - 2)
    frac = (path - base).clamp(0, 1)
    r0, c0 = base[:, 0].long(), base[:, 1].long()
    fr, fc = frac[:, 0], frac[:, 1]
    kernel = torch.zeros(size * size, dtype=f64)
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        kernel.index_add_(0, (r0 + dr) * size + (c0 + dc), w)
    kernel = kernel.reshape(size, size)
    return (kernel / kernel.sum()).to(dtype)
