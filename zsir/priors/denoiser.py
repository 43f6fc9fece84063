r"""Bring your own denoiser: any ``D(x, sigma)`` trained on [0, 1] images becomes a :class:`Prior`.

The network works in public units (x in [0, 1], sigma the [0, 1]-unit std, a ``(B, 1, 1, 1)`` tensor), the
prior in model units, and :mod:`zsir.units` converts:

.. math::

    \mathrm{denoise}(x_m, \sigma_m) = 2\, D\!\left(\tfrac{x_m + 1}{2}, \tfrac{\sigma_m}{2}\right) - 1 .
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from zsir import units
from zsir.priors.base import Prior

__all__ = ["DenoiserPrior"]


class DenoiserPrior(Prior):
    """An MMSE Gaussian denoiser in [0, 1] units as a prior (``kind == "mmse"``).

    Args:
        net: ``net(x, sigma) -> x0`` with x ``(B, C, H, W)`` in [0, 1] and sigma ``(B, 1, 1, 1)`` in [0, 1] units
            (an ``nn.Module`` or any callable). Modules are put in eval mode with ``requires_grad_(False)``;
            gradients still flow to the input.
        sigma_max: largest noise std the network was trained for, **[0, 1] units** (the prior's ``sigma_max``
            in model units is twice this).
        sigma_min: smallest noise std, [0, 1] units.
        channels: image channels.
        multiple: inputs are padded to a multiple of this (e.g. 8 for a 3-level UNet).
        train_size: training crop size ``(H, W)`` for a one-time warning, or ``None``.
        name: display name.

    Example:
        >>> prior = DenoiserPrior(lambda x, s: x, sigma_max=0.2, name="identity")
        >>> prior.sigma_max
        0.4
    """

    def __init__(
        self,
        net: nn.Module | Callable[[Tensor, Tensor], Tensor],
        *,
        sigma_max: float,
        sigma_min: float = 0.0,
        channels: int = 3,
        multiple: int = 1,
        train_size: tuple[int, int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(channels=channels, multiple=multiple, train_size=train_size, name=name or type(net).__name__)
        if not callable(net):
            raise TypeError(f"net: expected a module or callable D(x, sigma), got {type(net).__name__}")
        if not 0 <= sigma_min < sigma_max:
            raise ValueError(f"sigma_min, sigma_max: expected 0 <= sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.net = net.eval().requires_grad_(False) if isinstance(net, nn.Module) else net
        self.sigma_min = float(units.sigma_to_model(sigma_min))
        self.sigma_max = float(units.sigma_to_model(sigma_max))

    def _denoise(self, x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        dtype = x.dtype
        if isinstance(self.net, nn.Module):
            dtype = next((p.dtype for p in self.net.parameters()), dtype)
        x01 = units.model_to_image(x).to(dtype)
        out = self.net(x01, units.sigma_to_image(sigma).to(dtype), **kwargs)
        return units.image_to_model(torch.as_tensor(out).to(x.dtype))
