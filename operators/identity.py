"""The identity operator (denoising): ``y = x``; SVD form ``U = V = I``, ``s = 1``."""

from __future__ import annotations

import torch
from torch import Tensor

from zsir.operators.base import SVDOperator
from zsir.operators.separable import image_hw

__all__ = ["Identity"]


class Identity(SVDOperator):
    """``A = I`` (denoising): ``pinv(y, eta) = y / (1 + eta)``, ``prox_l2 = (gamma y + z) / (gamma + 1)``."""

    def y_shape(self, x_shape):
        return image_hw(x_shape, "x")

    def x_shape(self, y_shape):
        return image_hw(y_shape, "y")

    def singulars(self, x_shape, *, device=None, dtype=torch.float32) -> Tensor:
        self.y_shape(x_shape)
        return torch.ones(1, 1, 1, 1, device=device, dtype=dtype)

    def A(self, x: Tensor) -> Tensor:
        self.check_x(x)
        return x

    def At(self, y: Tensor) -> Tensor:
        self.check_y(y)
        return y

    def Vt(self, x: Tensor) -> Tensor:
        return x

    def V(self, c: Tensor) -> Tensor:
        return c

    def Ut(self, y: Tensor) -> Tensor:
        return y

    def U(self, c: Tensor) -> Tensor:
        return c
