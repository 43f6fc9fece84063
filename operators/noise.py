r"""Measurement noise in [0, 1] image units, and :func:`degrade` (``y = noise(A x)``).

Noise models are callables ``noise(y, generator=None)``; randomness comes only from the passed
``torch.Generator`` (which may live on another device than ``y``: the noise is drawn there and moved). Gaussian
noise is drawn in float32 whatever ``y``'s dtype, so a seed gives the same noise in float32 and float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zsir.operators.base import LinearOperator
from zsir.operators.inpainting import Inpainting
from zsir.units import as_sigma

__all__ = ["GaussianNoise", "PoissonNoise", "degrade"]


def _generator_device(generator: torch.Generator | None, like: Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


class GaussianNoise:
    r"""Additive white Gaussian noise ``y + sigma n``, ``n ~ N(0, I)``.

    Args:
        sigma: standard deviation in **[0, 1] image units** (``0.05`` on a [0, 1] image; it is ``0.1`` in the
            [-1, 1] model units of DDRM/CM4IR's ``--sigma_0``), a float or one value per sample (sequence or
            tensor of ``B`` values).
    """

    def __init__(self, sigma: float | Tensor):
        s = torch.as_tensor(sigma, dtype=torch.float64).detach().flatten()
        as_sigma(s, max(s.numel(), 1), name="sigma", low=0.0, high=1.0)
        self.sigma = sigma

    def __call__(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        s = as_sigma(self.sigma, y.shape[0], device=y.device, dtype=y.dtype, name="sigma", low=0.0, high=1.0)
        s = s.reshape(-1, *([1] * (y.dim() - 1)))
        n = torch.randn(
            tuple(y.shape), generator=generator, device=_generator_device(generator, y), dtype=torch.float32
        )
        return y + s * n.to(device=y.device, dtype=y.dtype)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"


class PoissonNoise:
    r"""Shot noise ``y_noisy = gain * Poisson(max(y, 0) / gain)`` (mean ``y``, variance ``gain * y``).

    ``1 / gain`` is the photon count of a white (1.0) pixel: ``gain = 0.01`` means 100 photons at white. Applied
    to [0, 1] images (apply it before any shift to [-1, 1]). Negative inputs are clipped to 0.

    Args:
        gain: positive float (image units per photon).
    """

    def __init__(self, gain: float):
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 < gain < float("inf"):
            raise ValueError(f"gain: expected a positive finite float (image units per photon), got {gain!r}")
        self.gain = float(gain)

    def __call__(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        rate = (y.detach().clamp_min(0) / self.gain).to(device=_generator_device(generator, y), dtype=torch.float64)
        counts = torch.poisson(rate, generator=generator)
        return (self.gain * counts).to(device=y.device, dtype=y.dtype)

    def __repr__(self) -> str:
        return f"PoissonNoise(gain={self.gain})"


def degrade(
    x: Tensor,
    operator: LinearOperator,
    noise: GaussianNoise | PoissonNoise | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Simulate a measurement ``y = noise(A x)`` of a [0, 1] image batch ``x``.

    For :class:`~zsir.operators.Inpainting` the holes of ``y`` are reset to 0 after the noise, so ``y`` keeps
    zeros where nothing was observed.
    """
    y = operator.A(x)
    if noise is not None:
        y = noise(y, generator=generator)
        if isinstance(operator, Inpainting):
            y = operator.A(y)
    return y
