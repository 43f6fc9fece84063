r"""The prior protocol every sampler talks to.

A :class:`Prior` works on images in **[-1, 1]** in **variance-exploding** form. :meth:`Prior.denoise` returns
the estimate of ``x0`` from ``x = x0 + sigma * eps``; ``sigma`` is in **[-1, 1] model units** (twice the
[0, 1]-unit std, see :mod:`zsir.units`), a float or a per-sample tensor.

* ``kind == "mmse"``: a Tweedie / MMSE denoiser ``E[x0 | x]`` (diffusion models, Gaussian denoisers, exact
  priors).
* ``kind == "consistency"``: a consistency function ``f(x, sigma)`` that maps the noisy point to the start of
  its probability-flow ODE trajectory.

Discrete-time diffusion priors also expose ``alphas_cumprod`` (the alpha-bar table, index t = 0..T-1) and
:meth:`Prior.timestep`, the nearest table index for a VE sigma (``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)``,
exactly as in rdmd.md 1.1).

Subclasses implement :meth:`Prior._denoise` on ``(B, C, H, W)`` inputs with ``sigma`` already shaped
``(B, 1, 1, 1)``. This base class handles sigma normalisation, padding to the network's size multiple, tiling of
large inputs, and a one-time warning when the size differs from the training size.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsir import units

__all__ = ["Prior"]


class Prior(nn.Module):
    """Base class of all priors (see module docstring).

    Attributes:
        kind: ``"mmse"`` or ``"consistency"``.
        sigma_min, sigma_max: valid noise range in [-1, 1] model units.
        channels: number of image channels the prior models.
        alphas_cumprod: alpha-bar table (1-D tensor) for discrete-time diffusion priors, else ``None``.
        multiple: input H and W are reflect-padded to a multiple of this and cropped back.
        train_size: (H, W) the network was trained on, or ``None`` (no warning).
        tile_size: inputs larger than this (in either dimension) are processed in overlapping tiles;
            ``None`` disables tiling.
        tile_overlap: overlap between tiles, in pixels.
    """

    kind: str = "mmse"
    sigma_min: float = 0.0
    sigma_max: float = float("inf")
    channels: int = 3
    multiple: int = 1
    train_size: tuple[int, int] | None = None
    tile_size: int | None = None
    tile_overlap: int = 32

    def __init__(
        self,
        *,
        channels: int | None = None,
        multiple: int | None = None,
        train_size: tuple[int, int] | None = None,
        name: str | None = None,
    ) -> None:
        """Optional arguments override the class attributes of the same name (``name`` defaults to the class)."""
        super().__init__()
        self.alphas_cumprod: Tensor | None = None
        self._size_warned = False
        if channels is not None:
            self.channels = int(channels)
        if multiple is not None:
            self.multiple = int(multiple)
        if train_size is not None:
            self.train_size = tuple(train_size)
        self.name = name or type(self).__name__

    # ----- to implement ---------------------------------------------------------------------------------------
    def _denoise(self, x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        """Denoise ``x`` (B, C, H, W) at per-sample ``sigma`` (B, 1, 1, 1), both in model units."""
        raise NotImplementedError

    # ----- public API -----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for t in self.parameters():
            return t.dtype
        return torch.float32

    def denoise(self, x: Tensor, sigma: float | Tensor, **kwargs) -> Tensor:
        """Estimate ``x0`` from ``x = x0 + sigma * eps`` (VE, [-1, 1] images, sigma in [-1, 1] units).

        Args:
            x: ``(B, C, H, W)`` noisy images in [-1, 1] scale (values may exceed the range).
            sigma: float or per-sample tensor (B elements), model units. It is clamped to
                ``[sigma_min, sigma_max]``.
            **kwargs: prior-specific options (e.g. ``class_labels`` for class-conditional models).

        Returns:
            ``(B, C, H, W)`` estimate of x0.
        """
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x: expected shape (B, {self.channels}, H, W) for this prior, got {tuple(x.shape)}")
        s = units.as_sigma(sigma, x.shape[0], device=x.device, dtype=x.dtype, name="sigma")
        s = s.clamp(self.sigma_min, self.sigma_max)
        self._warn_size(x)
        H, W = x.shape[-2:]
        if self.tile_size is not None and max(H, W) > self.tile_size:
            return self._tiled(x, s, **kwargs)
        return self._padded(x, s, **kwargs)

    def timestep(self, sigma: float | Tensor) -> Tensor:
        """Nearest discrete timestep for a VE sigma (model units): ``argmin_t |sigma_t - sigma|``."""
        if self.alphas_cumprod is None:
            raise AttributeError(f"{type(self).__name__} is not a discrete-time diffusion prior")
        table = self.sigma_table()
        sigma = sigma.reshape(-1) if isinstance(sigma, Tensor) else np.reshape(sigma, -1)
        return torch.as_tensor(units.timestep_from_sigma(sigma, table), device=table.device)

    def sigma_table(self) -> Tensor:
        """``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)`` for every t (model units)."""
        if self.alphas_cumprod is None:
            raise AttributeError(f"{type(self).__name__} is not a discrete-time diffusion prior")
        return units.sigma_from_abar(self.alphas_cumprod)

    # ----- size handling --------------------------------------------------------------------------------------
    def _warn_size(self, x: Tensor) -> None:
        if self.train_size is not None and not self._size_warned and tuple(x.shape[-2:]) != tuple(self.train_size):
            warnings.warn(
                f"{type(self).__name__} was trained on {self.train_size[0]}x{self.train_size[1]} images; "
                f"got {x.shape[-2]}x{x.shape[-1]}. Results off the training size may be worse.",
                stacklevel=3,
            )
            self._size_warned = True

    def _padded(self, x: Tensor, s: Tensor, **kwargs) -> Tensor:
        H, W = x.shape[-2:]
        m = self.multiple
        ph, pw = (-H) % m, (-W) % m
        if ph == 0 and pw == 0:
            return self._denoise(x, s, **kwargs)
        mode = "reflect" if ph < H and pw < W else "replicate"
        xp = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self._denoise(xp, s, **kwargs)[..., :H, :W]

    def _tiled(self, x: Tensor, s: Tensor, **kwargs) -> Tensor:
        """Overlapping tiles blended with a separable triangular window."""
        tile, ov = int(self.tile_size), int(self.tile_overlap)
        H, W = x.shape[-2:]
        stride = max(tile - ov, 1)
        ys = _starts(H, tile, stride)
        xs = _starts(W, tile, stride)
        out = torch.zeros_like(x)
        weight = torch.zeros((1, 1, H, W), dtype=x.dtype, device=x.device)
        for y0 in ys:
            for x0 in xs:
                patch = x[..., y0 : y0 + tile, x0 : x0 + tile]
                h, w = patch.shape[-2:]
                win = _window(h, x.device, x.dtype)[:, None] * _window(w, x.device, x.dtype)[None, :]
                out[..., y0 : y0 + h, x0 : x0 + w] += self._padded(patch, s, **kwargs) * win
                weight[..., y0 : y0 + h, x0 : x0 + w] += win
        return out / weight


def _starts(n: int, tile: int, stride: int) -> list[int]:
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile + 1, stride))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    return starts


def _window(n: int, device, dtype) -> Tensor:
    t = torch.arange(n, device=device, dtype=dtype)
    return torch.minimum(t + 1, n - t).clamp_max(math.ceil(n / 4)) / math.ceil(n / 4)
