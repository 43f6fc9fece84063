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
see docs/priors/diffusion.md).

Subclasses implement :meth:`Prior._denoise` on ``(B, C, H, W)`` inputs with ``sigma`` already shaped
``(B, 1, 1, 1)``. This base class handles sigma normalisation, padding to the network's size multiple, tiling of
large inputs, and a one-time warning when the size differs from the training size.

Tiling
------
Inputs larger than the tile (in either dimension) are denoised in overlapping square tiles of side ``T`` whose
outputs are blended with a separable raised-cosine window: along each axis a tile's weight rises as
``w(t) = sin^2(pi/2 * (t + 1) / (r + 1))`` over its first ``r`` pixels (``r`` = the overlap), is 1 inside and
falls symmetrically at the far side; sides on the image border are not tapered. The output is
``sum_i w_i D(x_i) / sum_i w_i``, so a pointwise denoiser gives exactly the untiled result. With a generator
(samplers pass theirs), the interior tile grid is shifted per call by a random offset in ``[0, T - r)`` on each
axis, so tile borders fall elsewhere at every step and no seam accumulates (the shifted-window trick of tiled
diffusion, e.g. Bar-Tal et al., MultiDiffusion, ICML 2023, sec. 3.2 uses fixed overlaps; random shifts are from
Jimenez, "Mixture of Diffusers", 2023, and DemoFusion's shifted crops). Every tile is full size and inside the
image.

Which priors tile by default:

* fixed-size priors (``fully_convolutional = False``: ADM, DDPM / diffusers UNets, consistency models, whose
  attention layers saw one resolution) tile at their training size ``max(train_size)``;
* fully convolutional priors (denoisers, the built-in prior) tile at ``CONV_TILE`` (512) pixels, only to bound
  memory: their tiles are large, so the blend touches a small fraction of the image.

``tile_size = 0`` turns tiling off (the whole image in one call, as before).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsir import units

__all__ = ["Prior", "CONV_TILE"]

CONV_TILE = 512
"""Default tile side (pixels) of fully convolutional priors: bounds the network's activations per call."""

PROBE_FALLBACK = 8192.0
"""Bytes per pixel assumed when a prior cannot be probed alone (4x for a differentiated call): a conservative
guess, four times what the built-in prior measures."""


class Prior(nn.Module):
    """Base class of all priors (see module docstring).

    Attributes:
        kind: ``"mmse"`` or ``"consistency"``.
        sigma_min, sigma_max: valid noise range in [-1, 1] model units.
        channels: number of image channels the prior models.
        alphas_cumprod: alpha-bar table (1-D tensor) for discrete-time diffusion priors, else ``None``.
        multiple: input H and W are reflect-padded to a multiple of this and cropped back.
        train_size: (H, W) the network was trained on, or ``None`` (no warning).
        fully_convolutional: the network works at any size (tiling only bounds memory); ``False`` for
            networks trained at one size (they tile at ``train_size``).
        tile_size: tile side in pixels; ``None`` = the default (``max(train_size)`` for fixed-size priors,
            ``CONV_TILE`` (512) for fully convolutional ones), ``0`` = never tile.
        tile_overlap: minimum overlap of neighbouring tiles in pixels; ``None`` = ``tile // 8`` (at least 8).
        autocast_dtype: ``torch.float16`` / ``torch.bfloat16`` runs the network under :func:`torch.autocast`
            (weights stay float32, convolutions and matrix products in the lower precision; the output is cast
            back to the input's dtype); ``None`` = the network's own dtype.
        channels_last: run the network in the channels-last memory format (its 4-D weights and its input; the
            output is returned in the usual layout): ``True`` always, ``False`` never, ``None`` (default) on CUDA
            for priors with 2-D convolutions, where cuDNN's convolutions prefer it. Only the memory layout
            changes, so outputs agree to float round-off (tests/test_prior_base.py).
    """

    kind: str = "mmse"
    sigma_min: float = 0.0
    sigma_max: float = float("inf")
    channels: int = 3
    multiple: int = 1
    train_size: tuple[int, int] | None = None
    fully_convolutional: bool = True
    tile_size: int | None = None
    tile_overlap: int | None = None
    autocast_dtype: torch.dtype | None = None
    channels_last: bool | None = None

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
        self._bytes_per_pixel: dict[bool, float] = {}
        self._weights_format = torch.contiguous_format
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

    def denoise(
        self, x: Tensor, sigma: float | Tensor, *, generator: torch.Generator | None = None, **kwargs
    ) -> Tensor:
        """Estimate ``x0`` from ``x = x0 + sigma * eps`` (VE, [-1, 1] images, sigma in [-1, 1] units).

        Args:
            x: ``(B, C, H, W)`` noisy images in [-1, 1] scale (values may exceed the range).
            sigma: float or per-sample tensor (B elements), model units. It is clamped to
                ``[sigma_min, sigma_max]``.
            generator: draws the random shift of the tile grid when the input is tiled (``None``: no shift);
                untouched when the input fits one tile.
            **kwargs: prior-specific options (e.g. ``class_labels`` for class-conditional models).

        Returns:
            ``(B, C, H, W)`` estimate of x0.
        """
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x: expected shape (B, {self.channels}, H, W) for this prior, got {tuple(x.shape)}")
        s = units.as_sigma(sigma, x.shape[0], device=x.device, dtype=x.dtype, name="sigma")
        s = s.clamp(self.sigma_min, self.sigma_max)
        tile, overlap = self.tiling()
        H, W = x.shape[-2:]
        if tile and max(H, W) > tile:
            return self._tiled(x, s, tile, overlap, generator, **kwargs)
        self._warn_size(x)
        return self._padded(x, s, **kwargs)

    def tiling(self) -> tuple[int, int]:
        """``(tile, overlap)`` in pixels that :meth:`denoise` uses; ``tile == 0`` means no tiling."""
        tile = self.tile_size
        if tile is None:
            tile = CONV_TILE if self.fully_convolutional or self.train_size is None else max(self.train_size)
        tile = int(tile)
        overlap = self.tile_overlap if self.tile_overlap is not None else max(8, tile // 8)
        return tile, int(overlap)

    def check_tiling(self, tile: int | None, overlap: int | None) -> None:
        """Raise ValueError (naming ``tile`` / ``tile_overlap``) unless the values can be used with this prior."""
        if tile is not None:
            if not isinstance(tile, int) or tile < 0:
                raise ValueError(f"tile: expected a non-negative integer (0 = no tiling), got {tile!r}")
            if tile and (tile < 2 * self.multiple or tile % self.multiple):
                raise ValueError(
                    f"tile: {tile} is not a multiple of {self.multiple} of at least {2 * self.multiple} pixels, "
                    f"which {self.name} needs (its network downsamples by {self.multiple})"
                )
        if overlap is not None:
            t = tile if tile else (self.tiling()[0] if tile is None else 0)
            if not isinstance(overlap, int) or overlap < 0 or (t and overlap >= t):
                raise ValueError(f"tile_overlap: expected an integer in [0, {max(t - 1, 0)}] pixels, got {overlap!r}")

    @contextmanager
    def use_tiling(self, tile: int | None = None, overlap: int | None = None) -> Iterator[Prior]:
        """Context in which :meth:`denoise` uses ``tile`` / ``overlap`` (``None`` keeps the prior's setting)."""
        self.check_tiling(tile, overlap)
        saved = self.tile_size, self.tile_overlap
        if tile is not None:
            self.tile_size = tile
        if overlap is not None:
            self.tile_overlap = overlap
        try:
            yield self
        finally:
            self.tile_size, self.tile_overlap = saved

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

    # ----- memory ---------------------------------------------------------------------------------------------
    def bytes_per_pixel(self, grad: bool = False) -> float:
        """Peak bytes one denoiser call allocates per input pixel and batch element (measured once, cached).

        Measured with :func:`zsir.memory.peak_bytes` on one noisy probe of side ``min(tile, 128)`` (a multiple of
        :attr:`multiple`), with autograd recording when ``grad`` (as DPS runs). Activations grow linearly with
        the pixels for convolutions; attention at a fixed training size is covered by probing at that size when
        it is at most 128. A prior that cannot run the probe (e.g. one holding per-sample class labels for another
        batch size) is assumed to need ``PROBE_FALLBACK`` (8 kB) bytes per pixel.
        """
        if grad not in self._bytes_per_pixel:
            from zsir.memory import peak_bytes

            tile = self.tiling()[0] or 128
            side = max(self.multiple, min(tile, 128) // self.multiple * self.multiple)
            x = torch.zeros(1, self.channels, side, side, device=self.device, dtype=torch.float32)
            try:
                with torch.set_grad_enabled(grad), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    x.requires_grad_(grad)
                    with peak_bytes() as m:
                        out = self._padded(x, torch.full((1, 1, 1, 1), 0.5, device=x.device))
                        if grad:
                            out.sum().backward()
                self._bytes_per_pixel[grad] = m.peak / (side * side)
            except (ValueError, RuntimeError):  # e.g. per-sample class labels set for another batch size
                self._bytes_per_pixel[grad] = PROBE_FALLBACK * (4 if grad else 1)
        return self._bytes_per_pixel[grad]

    # ----- size handling --------------------------------------------------------------------------------------
    def _warn_size(self, x: Tensor) -> None:
        if self.train_size is not None and not self._size_warned and tuple(x.shape[-2:]) != tuple(self.train_size):
            warnings.warn(
                f"{type(self).__name__} was trained on {self.train_size[0]}x{self.train_size[1]} images; "
                f"got {x.shape[-2]}x{x.shape[-1]}. Results off the training size may be worse.",
                stacklevel=3,
            )
            self._size_warned = True

    def uses_channels_last(self, device: torch.device | str) -> bool:
        """Whether calls on ``device`` run in the channels-last format (:attr:`channels_last`; ``None``: on CUDA
        when the prior holds a 2-D convolution)."""
        if self.channels_last is not None:
            return bool(self.channels_last)
        return torch.device(device).type == "cuda" and any(isinstance(m, nn.Conv2d) for m in self.modules())

    def _memory_format(self, x: Tensor) -> Tensor:
        """``x`` (and, once, the prior's 4-D weights) in the memory format of :meth:`uses_channels_last`."""
        fmt = torch.channels_last if self.uses_channels_last(x.device) else torch.contiguous_format
        if fmt is not self._weights_format:
            with torch.inference_mode(False), torch.no_grad():  # normal weights, even inside a sampler's run
                self.to(memory_format=fmt)
            self._weights_format = fmt
        return x.contiguous(memory_format=torch.channels_last) if fmt is torch.channels_last else x

    def _padded(self, x: Tensor, s: Tensor, **kwargs) -> Tensor:
        H, W = x.shape[-2:]
        m = self.multiple
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            mode = "reflect" if ph < H and pw < W else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        net_in = self._memory_format(x)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            out = self._denoise(net_in, s, **kwargs)
        out = out[..., :H, :W].to(x.dtype)
        return out.contiguous() if net_in is not x else out

    def _tiled(self, x: Tensor, s: Tensor, tile: int, overlap: int, generator, **kwargs) -> Tensor:
        """Raised-cosine blend of overlapping full-size tiles on a grid shifted by a random offset."""
        H, W = x.shape[-2:]
        stride = max(tile - overlap, 1)
        if generator is not None:
            oy, ox = torch.randint(0, stride, (2,), generator=generator, device=generator.device).tolist()
        else:
            oy = ox = 0
        out = torch.zeros_like(x)
        weight = torch.zeros((1, 1, H, W), dtype=x.dtype, device=x.device)
        for y0 in tile_starts(H, tile, stride, oy):
            wy = blend_window(y0, H, tile, overlap, x)
            for x0 in tile_starts(W, tile, stride, ox):
                win = wy[:, None] * blend_window(x0, W, tile, overlap, x)[None, :]
                h, w = win.shape
                patch = x[..., y0 : y0 + h, x0 : x0 + w]
                self._warn_size(patch)
                out[..., y0 : y0 + h, x0 : x0 + w] += self._padded(patch, s, **kwargs) * win
                weight[..., y0 : y0 + h, x0 : x0 + w] += win
        return out.div_(weight)


def tile_starts(n: int, tile: int, stride: int, offset: int = 0) -> list[int]:
    """Start indices of tiles of side ``tile`` covering ``[0, n)``: ``0``, then ``offset + k * stride`` (k = 0, 1, ...)
    clipped to ``n - tile``; neighbours overlap by at least ``tile - stride`` pixels."""
    if n <= tile:
        return [0]
    starts, k = [0], 0
    while starts[-1] < n - tile:
        start = min(offset + k * stride, n - tile)
        if start > starts[-1]:
            starts.append(start)
        k += 1
    return starts


def blend_window(start: int, n: int, tile: int, overlap: int, like: Tensor) -> Tensor:
    """1-D weights of the tile ``[start, start + tile)`` of an axis of length ``n``: raised-cosine ramps of
    ``overlap`` pixels on the sides that are not on the image border, 1 elsewhere."""
    size = min(tile, n)
    w = torch.ones(size, dtype=like.dtype, device=like.device)
    r = min(overlap, size // 2)
    if r == 0:
        return w
    t = torch.arange(r, dtype=like.dtype, device=like.device)
    ramp = torch.sin(0.5 * math.pi * (t + 1) / (r + 1)) ** 2
    if start > 0:
        w[:r] = ramp
    if start + size < n:
        w[size - r :] = ramp.flip(0)
    return w
