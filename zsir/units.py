"""The one place where zsir converts between conventions.

Public convention (what users pass and get back):

* images are float tensors ``(B, C, H, W)`` in **[0, 1]**;
* noise levels (``sigma_y`` and denoiser sigmas) are standard deviations in **[0, 1] image units**.

Model convention (what priors and samplers compute in):

* images in **[-1, 1]**, ``x_model = 2 x - 1``;
* noise levels in **[-1, 1] units**, ``sigma_model = 2 sigma``;
* variance exploding (VE): ``x_sigma = x0 + sigma * eps``.

Published settings often give noise levels in **8-bit units** (``sigma * 255``, e.g. DPIR's ``49 / 255``):
:func:`sigma_to_8bit` and :func:`sigma_from_8bit`.

Diffusion models trained in variance-preserving (VP) form, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``,
map to VE by ``x_VE = x_VP / sqrt(abar_t)`` with ``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)``; the timestep of a
VE level is the nearest entry of that table (:func:`timestep_from_sigma`).

Every function here has an inverse, and each pair is tested by a round trip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "image_to_model",
    "model_to_image",
    "sigma_to_model",
    "sigma_to_image",
    "sigma_to_8bit",
    "sigma_from_8bit",
    "measurement_to_model",
    "measurement_to_image",
    "vp_to_ve",
    "ve_to_vp",
    "sigma_from_abar",
    "abar_from_sigma",
    "timestep_from_sigma",
    "as_sigma",
]


def image_to_model(x: Tensor) -> Tensor:
    """Map an image from [0, 1] to [-1, 1]: ``2 x - 1`` (one pass, computed as ``-1 + 2 x``: the same bits)."""
    return torch.add(torch.tensor(-1.0), x, alpha=2.0)


def model_to_image(x: Tensor) -> Tensor:
    """Map an image from [-1, 1] to [0, 1]: ``(x + 1) / 2`` (no clamping; one pass, computed as ``0.5 + 0.5 x``:
    the same bits, as halving is exact)."""
    return torch.add(torch.tensor(0.5), x, alpha=0.5)


def sigma_to_model(sigma):
    """Noise std in [0, 1] image units -> std in [-1, 1] model units (``2 sigma``)."""
    return 2.0 * sigma


def sigma_to_image(sigma):
    """Noise std in [-1, 1] model units -> std in [0, 1] image units (``sigma / 2``)."""
    return sigma / 2.0


def sigma_to_8bit(sigma):
    """Noise std in [0, 1] image units -> 8-bit units (``255 sigma``)."""
    return 255.0 * sigma


def sigma_from_8bit(sigma):
    """Noise std in 8-bit units -> [0, 1] image units (``sigma / 255``)."""
    return sigma / 255.0


def measurement_to_model(y: Tensor, ones_image: Tensor) -> Tensor:
    """Convert a measurement of a [0, 1] image into the measurement of the [-1, 1] image.

    For a linear ``A``: ``A (2 x - 1) = 2 A x - A 1``. ``ones_image`` must be ``A(1)``, the operator applied
    to an all-ones image (so inpainting, whose ``A 1`` is the mask, is handled exactly). The noise std doubles,
    see :func:`sigma_to_model`.
    """
    return 2.0 * y - ones_image


def measurement_to_image(y_model: Tensor, ones_image: Tensor) -> Tensor:
    """Inverse of :func:`measurement_to_model`."""
    return (y_model + ones_image) / 2.0


def vp_to_ve(x_vp: Tensor, abar) -> Tensor:
    """VP state ``sqrt(abar) x0 + sqrt(1 - abar) eps`` -> VE state ``x0 + sigma eps`` (divide by sqrt(abar))."""
    return x_vp / _sqrt(abar)


def ve_to_vp(x_ve: Tensor, abar) -> Tensor:
    """VE state -> VP state (multiply by sqrt(abar))."""
    return x_ve * _sqrt(abar)


def sigma_from_abar(abar):
    """VE-equivalent noise level of a VP marginal: ``sqrt(1 - abar) / sqrt(abar)`` (model units).

    ``abar`` may be a float, a numpy array (e.g. a whole alpha-bar table: the table of VE levels, in its dtype) or a
    tensor.
    """
    if isinstance(abar, Tensor):
        return torch.sqrt(1.0 - abar) / torch.sqrt(abar)
    if isinstance(abar, np.ndarray):
        return np.sqrt(1.0 - abar) / np.sqrt(abar)
    return math.sqrt(1.0 - abar) / math.sqrt(abar)


def abar_from_sigma(sigma):
    """Inverse of :func:`sigma_from_abar`: ``1 / (1 + sigma^2)``."""
    return 1.0 / (1.0 + sigma**2)


def timestep_from_sigma(sigma, table: np.ndarray | Tensor) -> np.ndarray | int:
    """The discrete timestep of a VE level: ``argmin_t |table_t - sigma|`` (the first on ties), computed in the
    table's dtype.

    ``table`` holds the VE levels ``sigma_t`` (model units) of every timestep (:func:`sigma_from_abar` of an
    alpha-bar table; numpy or a tensor); ``sigma`` (model units) is a float (returns an int) or an array / tensor
    (returns an int64 array of its size).
    """
    if isinstance(table, Tensor):
        table = table.detach().cpu().numpy()
    if isinstance(sigma, Tensor):
        sigma = sigma.detach().cpu().numpy()
    s = np.asarray(sigma, dtype=table.dtype)
    idx = np.abs(table[None, :] - s.reshape(-1, 1)).argmin(axis=1)
    return int(idx[0]) if s.ndim == 0 else idx


def _sqrt(v):
    if isinstance(v, Tensor):
        return torch.sqrt(v)
    return np.sqrt(v) if isinstance(v, np.ndarray) else math.sqrt(v)


def as_sigma(
    sigma: float | Sequence[float] | Tensor,
    batch_size: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    name: str = "sigma",
    low: float = 0.0,
    high: float | None = None,
) -> Tensor:
    """Normalise a scalar or per-sample noise level to a ``(B, 1, 1, 1)`` tensor.

    Args:
        sigma: a float, a sequence of ``B`` floats, or a tensor with 1 or ``B`` elements.
        batch_size: ``B``.
        name: argument name used in error messages.
        low, high: allowed closed range (``high=None``: unbounded).

    Raises:
        ValueError: wrong number of values, NaN/inf, or values outside ``[low, high]``.
    """
    s = torch.as_tensor(sigma, dtype=torch.float64).flatten()
    if s.numel() not in (1, batch_size):
        raise ValueError(f"{name}: expected a float or {batch_size} values (one per sample), got {s.numel()}")
    if not torch.isfinite(s).all():
        raise ValueError(f"{name}: expected finite values, got {s.tolist()}")
    if (s < low).any() or (high is not None and (s > high).any()):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected values in {rng}, got {s.tolist()}")
    return s.expand(batch_size).reshape(batch_size, 1, 1, 1).to(device=device, dtype=dtype).clone()
