"""Shared pieces of the exact priors: float64 buffers and draws, shape and sigma checks, orthonormal FFTs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from zsir import units
from zsir.priors.base import Prior

_F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)


def _randn64(shape: Sequence[int], generator: torch.Generator | None, device) -> Tensor:
    """Float64 standard normals drawn on the generator's device, moved to ``device`` (exact references want
    float64 draws, unlike :func:`zsir.samplers.randn`, which draws float32)."""
    gdev = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=_F64).to(device)


def _check_shape(shape: Sequence[int], name: str = "shape") -> tuple[int, int, int]:
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name}: expected a (C, H, W) image shape of positive ints, got {shape}")
    return shape


def _sigma64(sigma: float | Tensor, batch: int, device, name: str = "sigma_y") -> Tensor:
    """A noise std (float, B values or (B,1,1,1)) as a float64 (B, 1, 1, 1) tensor on ``device``."""
    if isinstance(sigma, Tensor):
        sigma = sigma.detach().to("cpu", _F64)
    return units.as_sigma(sigma, batch, device=device, dtype=_F64, name=name)


def _fft(x: Tensor) -> Tensor:
    return torch.fft.fft2(x, norm="ortho")


def _ifft(x: Tensor) -> Tensor:
    return torch.fft.ifft2(x, norm="ortho").real


class _Float64Prior(Prior):
    """A prior whose buffers stay float64: ``.to(device)`` moves them, dtype casts (``.to(float32)``,
    ``.half()``) are ignored, so the exact computations keep full precision whatever dtype the caller uses.
    They are never tiled: their densities couple the whole image."""

    tile_size = 0

    def _apply(self, fn, recurse: bool = True):
        def keep64(t: Tensor) -> Tensor:
            out = fn(t)
            return t.to(out.device) if t.dtype == _F64 and out.dtype != _F64 else out

        return super()._apply(keep64, recurse)
