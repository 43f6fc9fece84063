"""Helpers shared by the denoisers of :mod:`zsir.models`: EDM preconditioning, sigma batching, padding, the plain
convolution stack."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["precondition", "sigma_batch", "pad_and_run", "plain_conv_stack"]


def precondition(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM coefficients (Karras et al. 2022, Table 1) for ``sigma`` ``(B, 1, 1, 1)`` and ``sigma_data``, both in
    [0, 1] units: ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sd^2)`` and ``c_noise = log(max(sigma, 1e-4)) / 4``."""
    norm = torch.sqrt(sigma**2 + sigma_data**2)
    return sigma_data**2 / norm**2, sigma * sigma_data / norm, 1.0 / norm, 0.25 * torch.log(sigma.clamp_min(1e-4))


def sigma_batch(sigma: float | Tensor | None, x: Tensor) -> Tensor:
    """``sigma`` ([0, 1] units; a float, one value or one per image) as a ``(B, 1, 1, 1)`` tensor like ``x``."""
    if sigma is None:
        raise ValueError("sigma: this network is a non-blind denoiser; pass the noise std in [0, 1] units")
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.numel() not in (1, x.shape[0]):
        raise ValueError(f"sigma: expected a float or {x.shape[0]} values, got shape {tuple(s.shape)}")
    return s.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)


def pad_and_run(fn, img: Tensor, multiple: int, channels: int) -> Tensor:
    """``fn(x)`` on ``img`` (``(B, C, H, W)`` or ``(C, H, W)``) reflect-padded to ``multiple``, cropped back."""
    squeeze = img.dim() == 3
    x = img[None] if squeeze else img
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"img: expected (B, {channels}, H, W) or ({channels}, H, W), got {tuple(img.shape)}")
    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < H and pw < W else "replicate")
    out = fn(x)[..., :H, :W]
    return out[0] if squeeze else out


def plain_conv_stack(
    in_channels: int, width: int, out_channels: int, depth: int, *, batch_norm: bool, bias: bool
) -> nn.Sequential:
    """The plain 3x3 convolution stack of FFDNet (Zhang et al., TIP 2018, Fig. 1): Conv+ReLU, ``depth - 2`` times
    Conv(+BN)+ReLU, Conv; ``depth`` convolutions in all, spatial size kept.

    ``bias`` applies to every convolution, except the middle ones when ``batch_norm`` follows them (BN's shift
    replaces it). The layer order (and so the state-dict keys ``0``, ``2``, ``3``, ...) is the same for both
    networks that use it: the pretrained FFDNet (:mod:`zsir.models.ffdnet`) and the trainable
    :class:`~zsir.models.convnets.UnshuffleCNN`.
    """
    if depth < 2:
        raise ValueError(f"depth: expected at least 2 convolutions, got {depth}")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=bias), nn.ReLU(inplace=True)]
    for _ in range(depth - 2):
        layers.append(nn.Conv2d(width, width, 3, padding=1, bias=bias and not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Conv2d(width, out_channels, 3, padding=1, bias=bias))
    return nn.Sequential(*layers)
