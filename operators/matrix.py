"""A dense matrix acting on flattened images, with its SVD (DDRM's ``GeneralH``, for small problems)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from zsir.operators.base import SVDOperator

__all__ = ["MatrixOperator"]


class MatrixOperator(SVDOperator):
    r"""``y = M vec(x)`` for a dense ``(m, d)`` matrix ``M`` and images of shape ``(C, H, W)`` with ``d = C H W``.

    The measurement is shaped ``(B, m, 1, 1)``. The SVD ``M = U diag(s) V^T`` is computed once in float64;
    spectral coefficients follow the layout of :mod:`zsir.operators.base` (shape of x, flattened order = the
    order of the right singular vectors, the ``min(m, d)`` non-zero ones first). Memory is O(d^2): meant for
    Gaussian-mixture benchmarks and tests, not for 256x256 images.

    Args:
        matrix: ``(m, d)`` tensor.
        x_shape: image shape ``(C, H, W)`` with ``C H W = d``; default ``(d, 1, 1)``.
        zero_threshold: singular values ``<= zero_threshold * s_max`` are treated as zero.
    """

    def __init__(self, matrix: Tensor, x_shape: Sequence[int] | None = None, zero_threshold: float = 1e-10):
        super().__init__()
        matrix = torch.as_tensor(matrix, dtype=torch.float64)
        if matrix.dim() != 2:
            raise ValueError(f"matrix: expected a 2-D (m, d) tensor, got shape {tuple(matrix.shape)}")
        m, d = matrix.shape
        x_shape = (d, 1, 1) if x_shape is None else tuple(int(v) for v in x_shape)
        if len(x_shape) != 3 or x_shape[0] * x_shape[1] * x_shape[2] != d:
            raise ValueError(f"x_shape: expected (C, H, W) with C*H*W = {d}, got {x_shape}")
        u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
        s = torch.where(s > zero_threshold * s.max(), s, torch.zeros_like(s))
        full_s = torch.zeros(d, dtype=torch.float64)
        full_s[: s.numel()] = s
        self._xs = x_shape
        self.m = m
        self.register_buffer("matrix", matrix)
        self.register_buffer("u", u)
        self.register_buffer("v", vh.T.contiguous())
        self.register_buffer("s", full_s)

    def _cast(self, name: str, like: Tensor) -> Tensor:
        return getattr(self, name).to(device=like.device, dtype=like.dtype)

    def y_shape(self, x_shape):
        if tuple(x_shape[1:]) != self._xs:
            raise ValueError(f"x: expected shape (B, {', '.join(map(str, self._xs))}), got {tuple(x_shape)}")
        return (x_shape[0], self.m, 1, 1)

    def x_shape(self, y_shape):
        if tuple(y_shape[1:]) != (self.m, 1, 1):
            raise ValueError(f"y: expected shape (B, {self.m}, 1, 1), got {tuple(y_shape)}")
        return (y_shape[0], *self._xs)

    def A(self, x: Tensor) -> Tensor:
        self.check_x(x)
        return (x.flatten(1) @ self._cast("matrix", x).T).reshape(x.shape[0], self.m, 1, 1)

    def At(self, y: Tensor) -> Tensor:
        return (y.flatten(1) @ self._cast("matrix", y)).reshape(y.shape[0], *self._xs)

    def Vt(self, x: Tensor) -> Tensor:
        return (x.flatten(1) @ self._cast("v", x)).reshape(x.shape)

    def V(self, c: Tensor) -> Tensor:
        return (c.flatten(1) @ self._cast("v", c).T).reshape(c.shape)

    def Ut(self, y: Tensor) -> Tensor:
        coef = y.flatten(1) @ self._cast("u", y)  # (B, m)
        d = self.s.numel()
        out = torch.zeros(y.shape[0], d, device=y.device, dtype=y.dtype)
        k = min(self.m, d)
        out[:, :k] = coef[:, :k]
        return out.reshape(y.shape[0], *self._xs)

    def U(self, c: Tensor) -> Tensor:
        k = min(self.m, self.s.numel())
        coef = torch.zeros(c.shape[0], self.m, device=c.device, dtype=c.dtype)
        coef[:, :k] = c.flatten(1)[:, :k]
        return (coef @ self._cast("u", c).T).reshape(c.shape[0], self.m, 1, 1)

    def singulars(self, x_shape, *, device=None, dtype=torch.float32) -> Tensor:
        return self.s.to(device=device, dtype=dtype).reshape(1, *self._xs)
