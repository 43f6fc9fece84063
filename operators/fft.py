r"""Circular convolution, diagonal in the Fourier domain.

With ``K = FFT2(k)`` (the kernel zero-padded to ``H x W`` and rolled so its centre tap sits at the origin) and
``X = FFT2(x)`` per channel::

    A x          = IFFT2(K X)                                   (true convolution, periodic boundary)
    At y         = IFFT2(conj(K) Y)
    pinv(y, eta) = IFFT2(conj(K) / (|K|^2 + eta) Y)              (0 where K == 0)
    prox_l2      = IFFT2((gamma conj(K) Y + Z) / (gamma |K|^2 + 1))

Real FFTs (``rfft2``/``irfft2``) are used internally. The periodic boundary differs from the reflect-padded
convolutions of DPS/RDMD near the image borders, so numbers are not interchangeable with theirs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zsir.operators.base import LinearOperator
from zsir.operators.separable import image_hw

__all__ = ["CircularBlur"]


class CircularBlur(LinearOperator):
    r"""Circular (periodic) convolution with any 2-D kernel; ``y`` has the shape of ``x``.

    The kernel's centre tap ``(kh // 2, kw // 2)`` is the origin, so a symmetric kernel does not shift the image;
    it is a true convolution (the kernel is flipped relative to ``conv2d``'s correlation). All channels use the
    same kernel. Images must be at least as large as the kernel.

    Args:
        kernel: ``(kh, kw)`` tensor, e.g. :func:`~zsir.operators.gaussian_kernel_2d` (RDMD's Gaussian deblur:
            ``gaussian_kernel_2d(61, 3.0)``) or :func:`~zsir.operators.motion_kernel`.
        zero_threshold: Fourier coefficients with ``|K| <= zero_threshold * max|K|`` are set to zero (default
            ``1e-6``; consistently in ``A``, ``At``, ``pinv``, ``prox_l2``), so ``pinv`` is finite even with
            ``eta = 0``.
    """

    def __init__(self, kernel: Tensor, zero_threshold: float = 1e-6):
        super().__init__()
        k = torch.as_tensor(kernel, dtype=torch.float64).detach().cpu()
        if k.dim() != 2 or k.numel() == 0:
            raise ValueError(f"kernel: expected a 2-D (kh, kw) tensor, got shape {tuple(k.shape)}")
        if not torch.isfinite(k).all():
            raise ValueError("kernel: expected finite values")
        if not 0.0 <= float(zero_threshold) < 1.0:
            raise ValueError(f"zero_threshold: expected a float in [0, 1), got {zero_threshold!r}")
        self.zero_threshold = float(zero_threshold)
        self.register_buffer("kernel", k)
        self._cache: dict[tuple, Tensor] = {}
        self._last_y: tuple = (None, 0, None)

    def _check_shape(self, shape, name: str) -> tuple[int, int, int, int]:
        b, c, h, w = image_hw(shape, name)
        kh, kw = self.kernel.shape
        if h < kh or w < kw:
            raise ValueError(
                f"{name}: image size (H, W) = ({h}, {w}) is smaller than the kernel ({kh}, {kw}); "
                f"CircularBlur expects H >= {kh} and W >= {kw}"
            )
        return (b, c, h, w)

    def y_shape(self, x_shape):
        return self._check_shape(x_shape, "x")

    def x_shape(self, y_shape):
        return self._check_shape(y_shape, "y")

    def _padded_kernel(self, H: int, W: int) -> Tensor:
        kh, kw = self.kernel.shape
        padded = torch.zeros(H, W, dtype=torch.float64)
        padded[:kh, :kw] = self.kernel.to(device="cpu", dtype=torch.float64)
        return torch.roll(padded, (-(kh // 2), -(kw // 2)), (0, 1))

    def spectrum(self, H: int, W: int, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """``K = FFT2(k)`` on an ``H x W`` grid, complex ``(H, W)`` (complex128 for float64, else complex64).

        Coefficients with ``|K| <= zero_threshold * max|K|`` are set to exactly 0 (the operator used everywhere).
        Computed on each call; the operator itself keeps only the rfft2 half (:meth:`half_spectrum`).
        """
        self._check_shape((1, 1, H, W), "x")
        k = torch.fft.fft2(self._padded_kernel(H, W))
        k = torch.where(k.abs() > self.zero_threshold * k.abs().max(), k, 0)
        return k.to(device=device, dtype=torch.complex128 if dtype == torch.float64 else torch.complex64)

    def half_spectrum(self, H: int, W: int, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The ``rfft2`` half of :meth:`spectrum`, ``(H, W // 2 + 1)``, cached per size, device and dtype.

        The half holds the largest ``|K|`` of the full spectrum (Hermitian symmetry), so the threshold is the same.
        Only the half is kept (``H (W / 2 + 1)`` complex values per size and dtype, not ``H W``).
        """
        self._check_shape((1, 1, H, W), "x")
        key = (H, W)
        if key not in self._cache:
            k = torch.fft.rfft2(self._padded_kernel(H, W))
            self._cache[key] = torch.where(k.abs() > self.zero_threshold * k.abs().max(), k, 0)
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        dkey = (H, W, torch.device(device) if device is not None else torch.device("cpu"), cdtype)
        if dkey not in self._cache:
            self._cache[dkey] = self._cache[key].to(device=device, dtype=cdtype)
        return self._cache[dkey]

    def _half(self, t: Tensor) -> Tensor:
        return self.half_spectrum(t.shape[-2], t.shape[-1], t.device, t.dtype)

    def _filter(self, t: Tensor, response: Tensor) -> Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(t) * response, s=t.shape[-2:])

    def A(self, x: Tensor) -> Tensor:
        self.check_x(x)
        return self._filter(x, self._half(x))

    def At(self, y: Tensor) -> Tensor:
        self.check_y(y)
        return self._filter(y, self._half(y).conj())

    def pinv(self, y: Tensor, eta: float | Tensor = 0.0) -> Tensor:
        self.check_y(y)
        k = self._half(y)
        mag2 = k.real**2 + k.imag**2
        keep = mag2 > 0
        eta = torch.as_tensor(eta, dtype=y.dtype, device=y.device)
        factor = torch.where(keep, k.conj() / torch.where(keep, mag2 + eta, torch.ones_like(mag2)), 0)
        return self._filter(y, factor)

    def _adjoint_spectrum(self, y: Tensor) -> Tensor:
        """``conj(K) FFT(y)`` (rfft2 half), kept for the last ``y`` seen: samplers pass the same ``y`` every step.

        The cache holds ``y`` itself (so its identity cannot be reused) and its version counter, so another or a
        modified tensor recomputes.
        """
        last, version, value = self._last_y
        now = None if y.is_inference() else y._version  # inference tensors keep no version counter: not cached
        if last is not y or now is None or version != now:
            value = torch.fft.rfft2(y).mul_(self._half(y).conj())
            self._last_y = (y, now, value)
        return value

    def prox_l2(self, z: Tensor, y: Tensor, gamma: float | Tensor) -> Tensor:
        self.check_y(y)
        g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device)
        num = torch.fft.rfft2(z).addcmul_(self._adjoint_spectrum(y), g)  # in place: no spectrum-sized temporary
        gain = (g * self._power(y)).add_(1.0).reciprocal_()  # real, one sample row: cheaper than a complex division
        return torch.fft.irfft2(num.mul_(gain), s=z.shape[-2:])

    def _power(self, t: Tensor) -> Tensor:
        """``|K|^2`` on the rfft2 half for images like ``t`` (real), cached."""
        key = ("power", *t.shape[-2:], t.device, t.dtype)
        if key not in self._cache:
            k = self._half(t)
            self._cache[key] = k.real**2 + k.imag**2
        return self._cache[key]

    def norm(self, x_shape, **kwargs) -> float:
        _, _, h, w = self.y_shape(x_shape)
        return float(self.half_spectrum(h, w, dtype=torch.float64).abs().max())

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}"
