r"""Separable operators ``A x = M_h x M_w^T`` (per channel) with a closed-form SVD.

``M_h`` (``m_h x H``) acts on the rows and ``M_w`` (``m_w x W``) on the columns of every channel. With the 1-D
SVDs ``M = U diag(s) V^T`` (computed once per size in float64 with :func:`torch.linalg.svd`, kept only in the
images' dtype, cached per ``(size, device, dtype)``), the 2-D SVD is the Kronecker product, and in the spectral
layout of :mod:`zsir.operators.base`::

    Vt(x) = V_h^T x V_w                       (B, C, H, W)
    s[i, j] = s_h[i] s_w[j]  for i < m_h, j < m_w;  0 elsewhere
    Ut(y) = pad(U_h^T y U_w) to (H, W)         (zeros where s == 0)
    U(c)  = U_h c[:m_h, :m_w] U_w^T

2-D singular values ``<= zero_threshold * max(s)`` are set to zero, so ``pinv`` never divides by a vanishing
value, even with ``eta = 0``. The operator is then consistently the truncated one, ``A = U diag(s) V^T`` in
``A``, ``At``, ``pinv`` and ``prox_l2`` alike (it differs from ``M_h x M_w^T`` by at most
``zero_threshold * ||A||`` in operator norm). Without truncation ``A`` and ``At`` apply ``M_h``, ``M_w`` directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from zsir.operators.base import SVDOperator
from zsir.operators.kernels import bicubic_kernel

__all__ = ["SeparableSVD", "AveragePoolSR", "BicubicSR", "SeparableBlur", "check_factor", "image_hw"]

_AXES = ("height", "width")


def image_hw(shape: Sequence[int], name: str = "x") -> tuple[int, int, int, int]:
    """Unpack a ``(B, C, H, W)`` shape; ValueError naming ``name`` otherwise."""
    shape = tuple(int(v) for v in shape)
    if len(shape) != 4:
        raise ValueError(f"{name}: expected a shape (B, C, H, W), got {shape}")
    return shape  # type: ignore[return-value]


def check_factor(factor: int) -> int:
    """Validate an integer resampling factor ``>= 1``."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor: expected an integer >= 1, got {factor!r}")
    return factor


class SeparableSVD(SVDOperator):
    r"""Base class of separable operators ``A x = M_h x M_w^T`` applied to every channel.

    Subclasses implement :meth:`matrix_1d` (the 1-D matrix for one axis and size) and :meth:`out_size` (the
    measurement length along an axis, raising ValueError for sizes that do not fit).

    Args:
        zero_threshold: 2-D singular values ``<= zero_threshold * s_max`` are set to zero (default ``1e-6``:
            below that, float32 round-off of the transforms dominates). DDRM and CM4IR use an absolute ``3e-2`` on
            the 1-D values, which changes the operator visibly; ``0`` keeps every non-zero value.
    """

    def __init__(self, zero_threshold: float = 1e-6):
        super().__init__()
        if not 0.0 <= float(zero_threshold) < 1.0:
            raise ValueError(f"zero_threshold: expected a float in [0, 1), got {zero_threshold!r}")
        self.zero_threshold = float(zero_threshold)
        self._cache: dict[tuple, object] = {}

    # ----- subclass interface ---------------------------------------------------------------------------------
    def matrix_1d(self, n: int, axis: int) -> Tensor:
        """The ``(out_size(n, axis), n)`` float64 matrix acting along ``axis`` (0: height, 1: width)."""
        raise NotImplementedError

    def out_size(self, n: int, axis: int) -> int:
        """Measurement length along ``axis`` for an image of length ``n``; ValueError when ``n`` does not fit."""
        return n

    def in_size(self, m: int, axis: int) -> int:
        """Image length along ``axis`` for a measurement of length ``m``."""
        return m

    def factor_bytes(self, x_shape) -> int:
        """Bytes of the 1-D factors (M, U, s, V per axis) and the 2-D spectrum kept for float32 images of
        ``x_shape`` (one copy, in the images' dtype, plus the float64 1-D singular values): they grow with
        ``H^2 + W^2``, not ``H W`` (4000x3000, SR x2: about 0.22 GB)."""
        _, _, h, w = image_hw(x_shape, "x")
        sizes = ((h, self.out_size(h, 0)), (w, self.out_size(w, 1)))
        per_axis = sum(n * m + m * m + m + n * n for n, m in sizes)
        return 4 * per_axis + 4 * h * w + 8 * sum(m for _, m in sizes)

    # ----- shapes ---------------------------------------------------------------------------------------------
    def y_shape(self, x_shape):
        b, c, h, w = image_hw(x_shape, "x")
        return (b, c, self.out_size(h, 0), self.out_size(w, 1))

    def x_shape(self, y_shape):
        b, c, mh, mw = image_hw(y_shape, "y")
        return (b, c, self.in_size(mh, 0), self.in_size(mw, 1))

    # ----- cached factors -------------------------------------------------------------------------------------
    def _factors(self, n: int, axis: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(M, U, s, V)`` of the 1-D matrix for length ``n``, on ``like``'s device and dtype.

        The SVD is computed in float64 and only its cast to ``like``'s dtype is kept (plus the float64 ``s``, a
        vector, for the threshold of :meth:`_spectrum`): at photo size a float64 master copy would double the
        memory. Another dtype or device recomputes the SVD.
        """
        key = ("1d", n, axis, like.device, like.dtype)
        if key not in self._cache:
            m = self.matrix_1d(n, axis).to(torch.float64).cpu()
            u, s, vh = torch.linalg.svd(m, full_matrices=True)
            self._cache[("s", n, axis)] = s
            cast = (t.to(device=like.device, dtype=like.dtype).contiguous() for t in (m, u, s, vh.mT))
            self._cache[key] = tuple(cast)
            del m, u, vh  # the float64 copies (at 4000 pixels, V alone is 128 MB) go before the caller continues
        return self._cache[key]  # type: ignore[return-value]

    def _singular_1d(self, n: int, axis: int) -> Tensor:
        """The float64 1-D singular values for length ``n`` (computed with the factors)."""
        if ("s", n, axis) not in self._cache:
            self._factors(n, axis, torch.empty(0))
        return self._cache[("s", n, axis)]  # type: ignore[return-value]

    def _spectrum(self, h: int, w: int, device, dtype) -> tuple[Tensor, bool]:
        """2-D singular values ``(1, 1, H, W)`` and whether any non-trivial one was thresholded to zero (the
        threshold is applied in float64; only the cast to ``dtype`` is kept)."""
        key = ("2d", h, w, torch.device(device) if device is not None else torch.device("cpu"), dtype)
        if key not in self._cache:
            s_h, s_w = self._singular_1d(h, 0), self._singular_1d(w, 1)
            block = torch.outer(s_h, s_w)
            kept = block > self.zero_threshold * block.max()
            full = torch.zeros(1, 1, h, w, dtype=dtype, device=device)
            full[..., : block.shape[0], : block.shape[1]] = torch.where(kept, block, torch.zeros_like(block))
            self._cache[key] = (full, not bool(kept.all()))
        return self._cache[key]  # type: ignore[return-value]

    def singulars(self, x_shape, *, device=None, dtype=torch.float32) -> Tensor:
        _, _, h, w = image_hw(x_shape, "x")
        self.y_shape(x_shape)
        return self._spectrum(h, w, device, dtype)[0]

    # ----- the map and its SVD --------------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        self.check_x(x)
        h, w = x.shape[-2:]
        if self._spectrum(h, w, x.device, x.dtype)[1]:  # some singular values were cut: A = U diag(s) V^T
            return super().A(x)
        return self._factors(h, 0, x)[0] @ x @ self._factors(w, 1, x)[0].mT

    def At(self, y: Tensor) -> Tensor:
        _, _, h, w = self.x_shape(tuple(y.shape))
        if self._spectrum(h, w, y.device, y.dtype)[1]:
            return super().At(y)
        return self._factors(h, 0, y)[0].mT @ y @ self._factors(w, 1, y)[0]

    def pinv(self, y: Tensor, eta: float | Tensor = 0.0) -> Tensor:
        """``V diag(s / (s^2 + eta)) U^T y`` using only the ``m_h x m_w`` block where ``s`` can be non-zero."""
        _, _, h, w = self.x_shape(tuple(y.shape))
        m_h, m_w = y.shape[-2:]
        _, u_h, _, v_h = self._factors(h, 0, y)
        _, u_w, _, v_w = self._factors(w, 1, y)
        s = self._spectrum(h, w, y.device, y.dtype)[0][..., :m_h, :m_w]
        eta = torch.as_tensor(eta, dtype=y.dtype, device=y.device)
        keep = s > 0
        factor = torch.where(keep, s / torch.where(keep, s * s + eta, torch.ones_like(s)), torch.zeros_like(s))
        return v_h[:, :m_h] @ (factor * (u_h.mT @ y @ u_w)) @ v_w[:, :m_w].mT

    def prox_l2(self, z: Tensor, y: Tensor, gamma: float | Tensor) -> Tensor:
        r"""``z + A^T (A A^T + gamma^{-1} I)^{-1} (y - A z)`` (Woodbury), with the block :meth:`pinv`.

        Equal to the spectral form ``V (gamma s U^T y + V^T z) / (gamma s^2 + 1)`` but never transforms the full
        image twice: for ``f``-times down-sampling ``A`` and the pseudo-inverse touch only the ``H/f x W/f`` block.
        """
        g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device)
        return z + self.pinv(y - self.A(z), 1.0 / g)

    def Vt(self, x: Tensor) -> Tensor:
        self.check_x(x)
        v_h = self._factors(x.shape[-2], 0, x)[3]
        v_w = self._factors(x.shape[-1], 1, x)[3]
        return v_h.mT @ x @ v_w

    def V(self, c: Tensor) -> Tensor:
        self.check_x(c, "c")
        v_h = self._factors(c.shape[-2], 0, c)[3]
        v_w = self._factors(c.shape[-1], 1, c)[3]
        return v_h @ c @ v_w.mT

    def Ut(self, y: Tensor) -> Tensor:
        _, _, h, w = self.x_shape(tuple(y.shape))
        u_h = self._factors(h, 0, y)[1]
        u_w = self._factors(w, 1, y)[1]
        c = F.pad(u_h.mT @ y @ u_w, (0, w - y.shape[-1], 0, h - y.shape[-2]))
        s, cut = self._spectrum(h, w, y.device, y.dtype)
        return c * (s > 0) if cut else c

    def U(self, c: Tensor) -> Tensor:
        _, _, m_h, m_w = self.y_shape(tuple(c.shape))
        u_h = self._factors(c.shape[-2], 0, c)[1]
        u_w = self._factors(c.shape[-1], 1, c)[1]
        return u_h @ c[..., :m_h, :m_w] @ u_w.mT


class _ResamplingSR(SeparableSVD):
    """Shared shape logic of the ``factor``-times downsampling operators (y is ``(B, C, H/f, W/f)``)."""

    def __init__(self, factor: int, zero_threshold: float = 1e-6):
        super().__init__(zero_threshold)
        self.factor = check_factor(factor)

    def out_size(self, n: int, axis: int) -> int:
        if n % self.factor:
            raise ValueError(
                f"x: image {_AXES[axis]} {n} is not divisible by the SR factor {self.factor} "
                f"(expected a multiple of {self.factor}; crop or pad the image)"
            )
        return n // self.factor

    def in_size(self, m: int, axis: int) -> int:
        return m * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class AveragePoolSR(_ResamplingSR):
    r"""Super-resolution by block averaging: ``y[i, j] = mean of the factor x factor block (i, j)``.

    DDRM's / CM4IR's ``sr{f}`` / ``sr_averagepooling``. ``M`` has ``1/f`` on each block of a row, so every 2-D
    singular value equals ``1/f``. y is ``(B, C, H/f, W/f)``.
    """

    def matrix_1d(self, n: int, axis: int) -> Tensor:
        m = self.out_size(n, axis)
        return torch.repeat_interleave(torch.eye(m, dtype=torch.float64), self.factor, dim=1) / self.factor


class BicubicSR(_ResamplingSR):
    r"""Bicubic super-resolution with DDRM's ``SRConv`` semantics (``sr_bicubic{f}``, CM4IR ``sr_bicubic``).

    Output sample ``r`` of an axis of length ``n`` uses the ``4 f`` taps ``k = bicubic_kernel(f)`` (Keys,
    ``a = -0.5``) on input pixels ``j = i + t - 2 f`` (``t = 0..4f-1``) around ``i = f // 2 + r f``, with
    half-sample **reflective** boundary (``-1 -> 0``, ``n -> n - 1``, repeated for images narrower than the
    kernel). The measurement is ``(B, C, H/f, W/f)``. This is not MATLAB ``imresize`` (RDMD's SR measurement).
    """

    def matrix_1d(self, n: int, axis: int) -> Tensor:
        m = self.out_size(n, axis)
        taps = bicubic_kernel(self.factor)
        k = taps.numel()
        rows = torch.arange(m)[:, None].expand(m, k)
        cols = self.factor // 2 + rows * self.factor + torch.arange(k)[None, :] - k // 2
        cols = cols.remainder(2 * n)
        cols = torch.where(cols >= n, 2 * n - 1 - cols, cols)
        mat = torch.zeros(m, n, dtype=torch.float64)
        mat.index_put_((rows.reshape(-1), cols.reshape(-1)), taps.repeat(m), accumulate=True)
        return mat


class SeparableBlur(SeparableSVD):
    r"""Separable blur ``y = k_h * (k_w * x)`` with **zero** padding, same size as x (true convolution).

    Row ``i`` of the 1-D matrix holds **all** ``k`` taps of the odd-length kernel: ``M[i, j] = k[c + i - j]``,
    ``c = k // 2``, for ``|i - j| <= c``. The singular values are laid out per channel (coefficient
    ``[b, c, i, j]`` has ``s_h[i] s_w[j]``).

    This is deliberately **not** DDRM's / CM4IR's ``Deblurring`` (``deblur_gauss``, ``deblur_uni``,
    ``deblur_aniso``): that class drops the last tap of odd kernels (DDRM; CM4IR fixed it) and tiles its
    singular values channel-major against pixel-major coefficients (``repeat(1, 3)``), so its ``A`` differs
    from the nominal blur by about 97 % on random input (docs/operators.md); it also zeroes 1-D singular values
    below ``3e-2``. zsir does not reproduce that operator: numbers published with it are not comparable.

    Args:
        kernel_h: odd-length 1-D kernel along the height (e.g. :func:`~zsir.operators.gaussian_kernel`).
        kernel_w: kernel along the width (default: ``kernel_h``).
        zero_threshold: see :class:`SeparableSVD`.
    """

    def __init__(self, kernel_h: Tensor, kernel_w: Tensor | None = None, zero_threshold: float = 1e-6):
        super().__init__(zero_threshold)
        kh = self._check_kernel(kernel_h, "kernel_h")
        kw = kh.clone() if kernel_w is None else self._check_kernel(kernel_w, "kernel_w")
        self.register_buffer("kernel_h", kh)
        self.register_buffer("kernel_w", kw)

    @staticmethod
    def _check_kernel(kernel, name: str) -> Tensor:
        k = torch.as_tensor(kernel, dtype=torch.float64).detach().cpu()
        if k.dim() != 1 or k.numel() % 2 == 0:
            raise ValueError(f"{name}: expected a 1-D kernel of odd length, got shape {tuple(k.shape)}")
        if not torch.isfinite(k).all():
            raise ValueError(f"{name}: expected finite taps, got {k.tolist()}")
        return k

    def matrix_1d(self, n: int, axis: int) -> Tensor:
        k = (self.kernel_h if axis == 0 else self.kernel_w).to(device="cpu", dtype=torch.float64)
        c = k.numel() // 2
        i = torch.arange(n)[:, None]
        d = c + i - torch.arange(n)[None, :]
        valid = (d >= 0) & (d < k.numel())
        return torch.where(valid, k[d.clamp(0, k.numel() - 1)], torch.zeros((), dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"kernel_h={self.kernel_h.numel()} taps, kernel_w={self.kernel_w.numel()} taps"
