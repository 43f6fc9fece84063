r"""Colourisation ``y = (x_R + x_G + x_B) / 3`` (grey = mean of RGB), y is ``(B, 1, H, W)``.

Per pixel ``A = [1, 1, 1] / 3 = U s v_1^T`` with ``U = 1``, ``s = 1 / sqrt(3)`` and the orthonormal colour basis
``v_1 = (1, 1, 1) / sqrt(3)``, ``v_2 = (1, -1, 0) / sqrt(2)``, ``v_3 = (1, 1, -2) / sqrt(6)``. In the spectral
layout coefficient channel ``k`` is ``<v_k, x>`` and ``s = (1/sqrt(3), 0, 0)``. DDRM/CM4IR use the weights
``(0.3333, 0.3334, 0.3333)``; the exact mean differs by ``1e-4`` relative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from zsir.operators.base import SVDOperator
from zsir.operators.separable import image_hw

__all__ = ["Colorization"]


class Colorization(SVDOperator):
    """Greyscale measurement of an RGB image: ``y = mean over channels``, shape ``(B, 1, H, W)``."""

    def __init__(self):
        super().__init__()
        basis = torch.tensor(
            [
                [1 / math.sqrt(3), 1 / math.sqrt(2), 1 / math.sqrt(6)],
                [1 / math.sqrt(3), -1 / math.sqrt(2), 1 / math.sqrt(6)],
                [1 / math.sqrt(3), 0.0, -2 / math.sqrt(6)],
            ],
            dtype=torch.float64,
        )  # columns v_1, v_2, v_3
        self.register_buffer("basis", basis)

    def y_shape(self, x_shape):
        b, c, h, w = image_hw(x_shape, "x")
        if c != 3:
            raise ValueError(f"x: Colorization expects 3 (RGB) channels, got {c}")
        return (b, 1, h, w)

    def x_shape(self, y_shape):
        b, c, h, w = image_hw(y_shape, "y")
        if c != 1:
            raise ValueError(f"y: Colorization measurements have 1 (grey) channel, got {c}")
        return (b, 3, h, w)

    def singulars(self, x_shape, *, device=None, dtype=torch.float32) -> Tensor:
        self.y_shape(x_shape)
        return torch.tensor([1 / math.sqrt(3), 0.0, 0.0], device=device, dtype=dtype).reshape(1, 3, 1, 1)

    def A(self, x: Tensor) -> Tensor:
        self.check_x(x)
        return x.mean(1, keepdim=True)

    def At(self, y: Tensor) -> Tensor:
        self.check_y(y)
        return (y / 3).expand(-1, 3, -1, -1).contiguous()

    def Vt(self, x: Tensor) -> Tensor:
        self.check_x(x)
        return torch.einsum("ck,bchw->bkhw", self.basis.to(device=x.device, dtype=x.dtype), x)

    def V(self, c: Tensor) -> Tensor:
        self.check_x(c, "c")
        return torch.einsum("ck,bkhw->bchw", self.basis.to(device=c.device, dtype=c.dtype), c)

    def Ut(self, y: Tensor) -> Tensor:
        self.check_y(y)
        return F.pad(y, (0, 0, 0, 0, 0, 2))

    def U(self, c: Tensor) -> Tensor:
        self.check_x(c, "c")
        return c[:, :1]
