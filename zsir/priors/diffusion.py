r"""Discrete-time VP diffusion networks as VE denoisers.

A network trained in variance-preserving form, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with integer
``t``, becomes a VE denoiser ``D(x, sigma)`` (x in [-1, 1], sigma in model units) by

1. ``t = argmin_t |sigma_t - sigma|`` with ``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)`` (:meth:`Prior.timestep`);
2. ``x_vp = sqrt(abar_t) x`` (:func:`zsir.units.ve_to_vp`);
3. the network prediction at ``t`` converted to ``x0``:

   * ``epsilon``: ``x0 = (x_vp - sqrt(1 - abar_t) eps) / sqrt(abar_t)``,
   * ``v_prediction``: ``x0 = sqrt(abar_t) x_vp - sqrt(1 - abar_t) v``,
   * ``sample``: ``x0`` is the output;
4. ``x0`` clamped to [-1, 1] (guided-diffusion ``clip_denoised=True``), unless ``clip=False``.

This is the ``pred_xstart`` of guided-diffusion that RDMD, DiffPIR, DDRM and DPS use (docs/priors/diffusion.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from zsir import units
from zsir.priors.base import Prior

__all__ = ["DiscreteVPPrior", "PREDICTION_TYPES", "call_network", "ddpm_linear_alphas_cumprod", "unet_multiple"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def ddpm_linear_alphas_cumprod(
    num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, dtype=np.float32
) -> np.ndarray:
    """The DDPM "linear" alpha-bar table ``cumprod(1 - linspace(beta_start, beta_end, T))`` (Ho et al. 2020, section
    4), computed in ``dtype``: float32 as the samplers' official codes (their integer timesteps depend on it),
    float64 as guided-diffusion (ADM) and the priors."""
    betas = np.linspace(beta_start, beta_end, num_steps, dtype=dtype)
    return np.cumprod(1.0 - betas, dtype=dtype)


def call_network(net: nn.Module, x: Tensor, t: Tensor, **kwargs) -> Tensor:
    """Call ``net(x, t, **kwargs)`` in the network's dtype; unwrap diffusers outputs (``.sample`` / tuples)."""
    dtype = next((p.dtype for p in net.parameters()), x.dtype) if isinstance(net, nn.Module) else x.dtype
    out = net(x.to(dtype), t, **kwargs)
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, (tuple, list)):
        out = out[0]
    return out.to(x.dtype)


def unet_multiple(net: nn.Module) -> int:
    """Size multiple a diffusers ``UNet2DModel`` needs: ``2 ** (number of down-sampling levels)``."""
    config = getattr(net, "config", None)
    levels = len(getattr(config, "block_out_channels", ())) if config is not None else 0
    return 2 ** max(levels - 1, 0)


class DiscreteVPPrior(Prior):
    """VE denoiser from a discrete-time VP network (see module docstring for the update equations).

    Args:
        net: network called as ``net(x_vp, t, **kwargs)`` with ``t`` a ``(B,)`` long tensor of timesteps; it
            returns a tensor (or a diffusers output with ``.sample``). Outputs with more channels than the image
            (learned variance, e.g. 6 for 3-channel images) use the first ``channels``.
        alphas_cumprod: the alpha-bar table ``abar_t``, t = 0..T-1 (1-D, decreasing).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        clip: clamp the x0 estimate to [-1, 1].
        channels: image channels.
        multiple: inputs are padded to a multiple of this (see :class:`Prior`).
        train_size: training resolution ``(H, W)`` (a warning is emitted once for other sizes), or ``None``.
        name: a short name shown in reprs and results.

    ``sigma_min`` / ``sigma_max`` are the first and last entries of the sigma table (model units). The network is
    put in eval mode with ``requires_grad_(False)``; gradients still flow to the input (DPS differentiates
    through :meth:`~zsir.priors.base.Prior.denoise`), nothing here disables autograd.
    """

    fully_convolutional = False  # trained at one size: tiles at max(train_size) by default

    def __init__(
        self,
        net: nn.Module,
        alphas_cumprod: Tensor | Sequence[float],
        prediction_type: str = "epsilon",
        *,
        clip: bool = True,
        channels: int = 3,
        multiple: int = 1,
        train_size: tuple[int, int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(channels=channels, multiple=multiple, train_size=train_size, name=name or type(net).__name__)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type: expected one of {PREDICTION_TYPES}, got {prediction_type!r}")
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().flatten()
        if abar.numel() < 2 or not ((abar > 0) & (abar <= 1)).all() or not (abar[1:] <= abar[:-1]).all():
            raise ValueError("alphas_cumprod: expected a decreasing 1-D table with values in (0, 1]")
        self.net = net.eval().requires_grad_(False)
        self.alphas_cumprod = abar
        self.prediction_type = prediction_type
        self.clip = clip
        table = self.sigma_table()
        self.sigma_min, self.sigma_max = float(table[0]), float(table[-1])

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, prediction_type={self.prediction_type!r}, T={self.alphas_cumprod.numel()}, "
            f"sigma=[{self.sigma_min:.4g}, {self.sigma_max:.4g}]"
        )

    def _denoise(self, x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        t = self.timestep(sigma.detach().flatten().cpu())
        abar = self.alphas_cumprod[t].to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)
        x_vp = units.ve_to_vp(x, abar)
        out = call_network(self.net, x_vp, t.to(x.device), **kwargs)
        if out.shape[1] < self.channels:
            raise ValueError(f"network returned {out.shape[1]} channels, expected at least {self.channels}")
        out = out[:, : self.channels]
        a, s = abar.sqrt(), (1.0 - abar).sqrt()
        if self.prediction_type == "epsilon":
            x0 = (x_vp - s * out) / a
        elif self.prediction_type == "v_prediction":
            x0 = a * x_vp - s * out
        else:
            x0 = out
        return x0.clamp(-1.0, 1.0) if self.clip else x0
