r"""Inpainting ``y = m * x`` (``m`` a boolean mask, True = observed) and mask factories.

The measurement keeps the image shape, with zeros in the holes. SVD form: ``V = I``, ``U = I``, ``s = m``
(``Ut(y) = m * y`` so the holes are ignored), hence ``pinv(y, eta) = m * y / (1 + eta)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zsir.operators.base import SVDOperator
from zsir.operators.separable import image_hw

__all__ = ["Inpainting", "random_mask", "box_mask", "mask_from_image"]


def _mask_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(v) for v in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape: expected (H, W) or (C, H, W) with positive sizes, got {shape}")
    return shape


class Inpainting(SVDOperator):
    r"""Pixel masking ``y = m * x``; ``y`` has the shape of ``x`` with zeros where ``m`` is False.

    Args:
        mask: boolean (or 0/1; non-zero = observed) tensor or array of shape ``(H, W)`` / ``(1, H, W)``
            (shared by all channels) or ``(C, H, W)`` / ``(1, C, H, W)`` (per channel). Build one with
            :func:`random_mask`, :func:`box_mask` or :func:`mask_from_image`.
    """

    def __init__(self, mask: Tensor | np.ndarray):
        super().__init__()
        m = torch.as_tensor(mask).detach().cpu()
        given = tuple(m.shape)
        if m.dim() == 4 and m.shape[0] == 1:
            m = m[0]
        if m.dim() == 2:
            m = m[None]
        if m.dim() != 3 or m.numel() == 0:
            raise ValueError(f"mask: expected shape (H, W), (1, H, W), (C, H, W) or (1, C, H, W), got {given}")
        self.register_buffer("mask", (m != 0)[None])  # (1, C or 1, H, W), bool

    def _check_shape(self, shape, name: str) -> tuple[int, int, int, int]:
        b, c, h, w = image_hw(shape, name)
        _, mc, mh, mw = self.mask.shape
        if (h, w) != (mh, mw):
            raise ValueError(f"{name}: image size (H, W) = ({h}, {w}) does not match the mask size ({mh}, {mw})")
        if mc != 1 and c != mc:
            raise ValueError(f"{name}: {c} channel(s) given but the mask has {mc} (expected {mc} channels)")
        return (b, c, h, w)

    def y_shape(self, x_shape):
        return self._check_shape(x_shape, "x")

    def x_shape(self, y_shape):
        return self._check_shape(y_shape, "y")

    def _mask_like(self, t: Tensor) -> Tensor:
        return self.mask.to(device=t.device, dtype=t.dtype)

    def singulars(self, x_shape, *, device=None, dtype=torch.float32) -> Tensor:
        self.y_shape(x_shape)
        return self.mask.to(device=device, dtype=dtype)

    def A(self, x: Tensor) -> Tensor:
        self.check_x(x)
        return x * self._mask_like(x)

    def At(self, y: Tensor) -> Tensor:
        self.check_y(y)
        return y * self._mask_like(y)

    def Vt(self, x: Tensor) -> Tensor:
        return x

    def V(self, c: Tensor) -> Tensor:
        return c

    def Ut(self, y: Tensor) -> Tensor:
        return self.At(y)

    def U(self, c: Tensor) -> Tensor:
        return self.A(c)

    def extra_repr(self) -> str:
        observed = float(self.mask.float().mean())
        return f"mask={tuple(self.mask.shape[1:])}, observed={observed:.3f}"


def random_mask(shape: Sequence[int], fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Random pixel mask with ``round(fraction * N)`` **missing** entries (``fraction`` = share of holes).

    "Random 80 % inpainting" is ``random_mask((H, W), 0.8)``. For ``(C, H, W)`` every entry is drawn
    independently (per-channel holes, DDRM's ``inp``); for ``(H, W)`` the holes are shared by all channels.
    The same generator seed gives the same mask.

    Returns:
        bool tensor of ``shape``, True = observed.
    """
    shape = _mask_shape(shape)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction: expected the fraction of missing pixels in [0, 1], got {fraction!r}")
    n = int(np.prod(shape))
    missing = torch.randperm(n, generator=generator)[: round(float(fraction) * n)]
    mask = torch.ones(n, dtype=torch.bool)
    mask[missing] = False
    return mask.reshape(shape)


def box_mask(shape: Sequence[int], box: Sequence[int]) -> Tensor:
    """Mask with one missing rectangle ``box = (top, left, height, width)`` (in pixels; all channels).

    The DPS/DiffPIR "box" task on 256 x 256 is ``box_mask((256, 256), (64, 64, 128, 128))``.

    Returns:
        bool tensor of ``shape``, True = observed.
    """
    shape = _mask_shape(shape)
    h, w = shape[-2:]
    box = tuple(int(v) for v in box)
    if len(box) != 4:
        raise ValueError(f"box: expected (top, left, height, width), got {box}")
    top, left, bh, bw = box
    if top < 0 or left < 0 or bh < 0 or bw < 0 or top + bh > h or left + bw > w:
        raise ValueError(f"box: expected (top, left, height, width) inside the image (H, W) = ({h}, {w}), got {box}")
    mask = torch.ones(shape, dtype=torch.bool)
    mask[..., top : top + bh, left : left + bw] = False
    return mask


def mask_from_image(path: str | Path) -> Tensor:
    """Load a mask file: True = observed.

    * ``.npy``: an array of shape ``(H, W)`` or ``(C, H, W)``; **non-zero = observed** (DDRM's ``inp_lolcat``
      masks follow this rule).
    * image files (PNG, ...): converted to greyscale; **white (> 127) = observed**, black = hole. The threshold
      at half range makes anti-aliased or JPEG-compressed edges binary. Returns ``(H, W)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no mask file at {str(path)!r}")
    if path.suffix.lower() == ".npy":
        arr = np.load(path)
        if arr.ndim not in (2, 3):
            raise ValueError(f"path: expected an (H, W) or (C, H, W) array in {str(path)!r}, got shape {arr.shape}")
        return torch.from_numpy(np.asarray(arr != 0))
    from PIL import Image

    with Image.open(path) as img:
        grey = np.asarray(img.convert("L"))
    return torch.from_numpy(grey > 127)
