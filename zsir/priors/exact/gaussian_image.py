"""The stationary Gaussian image prior (power-law spectrum, circulant covariance): exact denoiser, sampling,
log-density and posterior."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from zsir.operators.base import LinearOperator, conjugate_gradient
from zsir.priors.exact._common import _F64, _LOG_2PI, _check_shape, _fft, _Float64Prior, _ifft, _randn64, _sigma64

if TYPE_CHECKING:
    from zsir.priors.exact.consistency import GaussianImageConsistency

__all__ = ["GaussianImagePrior"]


class GaussianImagePrior(_Float64Prior):
    r"""Stationary Gaussian images with a power-law spectrum, ``x ~ N(m, Sigma)`` per channel (channels independent).

    ``Sigma`` is circulant: in the orthonormal 2-D DFT it is diagonal with variances

    .. math:: \lambda_f = c \, (|f| + f_{min})^{-\alpha},

    ``|f|`` the integer frequency radius ``sqrt(k_y^2 + k_x^2)`` (``k`` from ``fftfreq * size``), ``c`` chosen so
    that the marginal pixel std is ``scale`` (``mean_f lambda_f = scale^2``). All noise levels are stds in [-1, 1]
    model units.

    Args:
        shape: image shape ``(C, H, W)``; inputs must have exactly this shape.
        alpha: spectral exponent (2 is close to natural images).
        scale: marginal pixel std (model units).
        mean: float, per-channel sequence, or tensor broadcastable to ``(C, H, W)``.
        min_freq: offset ``f_min > 0`` keeping the DC variance finite.

    Attributes:
        cg_tol, cg_max_iter: tolerance and cap of the conjugate-gradient solves of the generic posterior.
    """

    kind = "mmse"
    sigma_min = 0.0
    sigma_max = float("inf")
    cg_tol: float = 1e-10
    cg_max_iter: int = 10000

    def __init__(
        self,
        shape: Sequence[int] = (3, 64, 64),
        alpha: float = 2.0,
        scale: float = 0.5,
        mean: float | Sequence[float] | Tensor = 0.0,
        min_freq: float = 1.0,
    ) -> None:
        super().__init__()
        self.shape = _check_shape(shape)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha: expected a finite value >= 0, got {alpha}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale: expected a finite value > 0, got {scale}")
        if not (math.isfinite(min_freq) and min_freq > 0):
            raise ValueError(f"min_freq: expected a finite value > 0, got {min_freq}")
        self.alpha, self.scale, self.min_freq = float(alpha), float(scale), float(min_freq)
        self.channels = self.shape[0]
        m = torch.as_tensor(mean, dtype=_F64)
        if m.dim() == 1 and m.numel() == self.shape[0]:
            m = m.reshape(-1, 1, 1)
        try:
            torch.broadcast_shapes(m.shape, self.shape)
        except RuntimeError as err:
            raise ValueError(
                f"mean: expected a float, {self.shape[0]} values or a tensor broadcastable to "
                f"{self.shape}, got shape {tuple(m.shape)}"
            ) from err
        self.register_buffer("mean", m.expand(self.shape).clone())

    # ----- the model --------------------------------------------------------------------------------------------
    def spectrum(self, device=None, dtype: torch.dtype = _F64) -> Tensor:
        """Covariance eigenvalues ``lambda_f`` per DFT frequency, shape ``(H, W)`` (orthonormal DFT, model units^2)."""
        _, H, W = self.shape
        ky = torch.fft.fftfreq(H, d=1.0 / H, dtype=_F64, device=device)
        kx = torch.fft.fftfreq(W, d=1.0 / W, dtype=_F64, device=device)
        radius = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
        p = (radius + self.min_freq) ** (-self.alpha)
        return (p * (self.scale**2 / p.mean())).to(dtype)

    def covariance_matvec(self, x: Tensor) -> Tensor:
        """``Sigma x`` for ``x`` of shape ``(..., H, W)`` (by FFT)."""
        return _ifft(self.spectrum(x.device, x.dtype) * _fft(x))

    def _check(self, x: Tensor, name: str = "x") -> None:
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, self.shape))}), got {got}")

    def _m(self, like: Tensor) -> Tensor:
        return self.mean.to(device=like.device, dtype=like.dtype)

    def _denoise(self, x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        r"""Exact MMSE: ``m + Sigma (Sigma + sigma^2 I)^{-1} (x - m)``, i.e. a Wiener filter ``lambda/(lambda+s^2)``."""
        self._check(x)
        x64, s64 = x.to(_F64), sigma.to(_F64)
        lam = self.spectrum(x.device)
        m = self._m(x64)
        return (m + _ifft(lam / (lam + s64**2) * _fft(x64 - m))).to(x.dtype)

    def sample(
        self, n: int, generator: torch.Generator | None = None, *, device=None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """``n`` exact prior samples, shape ``(n, C, H, W)``: ``m + Sigma^{1/2} z`` with the circulant square root."""
        if int(n) < 1:
            raise ValueError(f"n: expected a positive number of samples, got {n}")
        device = self.mean.device if device is None else device
        z = _randn64((int(n), *self.shape), generator, device)
        return (self._m(z) + _ifft(self.spectrum(device).sqrt() * _fft(z))).to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density, shape ``(B,)`` (float64): ``-1/2 sum_f |X_f|^2/lambda_f - 1/2 sum log(2 pi lambda_f)``."""
        self._check(x)
        x64 = x.to(_F64)
        lam = self.spectrum(x.device)
        r = _fft(x64 - self._m(x64))
        quad = (r.abs() ** 2 / lam).flatten(1).sum(1)
        logdet = self.shape[0] * (torch.log(lam).sum() + lam.numel() * _LOG_2PI)
        return -0.5 * (quad + logdet)

    def consistency(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> GaussianImageConsistency:
        """The exact consistency function of this prior (closed form per Fourier coefficient)."""
        from zsir.priors.exact.consistency import GaussianImageConsistency

        return GaussianImageConsistency(self, sigma_min=sigma_min, sigma_max=sigma_max)

    # ----- posterior under y = A x + n ----------------------------------------------------------------------------
    def fft_multiplier(self, operator: LinearOperator | None, *, device=None) -> Tensor | None:
        """The complex DFT multiplier ``H`` with ``A x = ifft2(H * fft2(x))`` if ``operator`` is FFT-diagonal
        (per-channel circular convolution, identity), else ``None``.

        Detected from the impulse response and verified on a fixed random probe, so it works for any operator
        (``None`` means the identity). Returns shape ``(1, C, H, W)``, float64-complex.
        """
        shape = (1, *self.shape)
        if operator is None:
            return torch.ones(shape, dtype=torch.complex128, device=device)
        if tuple(operator.y_shape(shape)) != shape:
            return None
        delta = torch.zeros(shape, dtype=_F64, device=device)
        delta[..., 0, 0] = 1.0
        mult = torch.fft.fft2(operator.A(delta).to(_F64))
        probe = torch.randn(shape, dtype=_F64, generator=torch.Generator().manual_seed(1234)).to(device)
        ref = operator.A(probe).to(_F64)
        err = (torch.fft.ifft2(mult * torch.fft.fft2(probe)).real - ref).norm()
        return mult if float(err) <= 1e-9 * max(float(ref.norm()), 1e-300) else None

    def _fft_posterior(self, mult: Tensor, s: Tensor, device) -> tuple[Tensor, Tensor]:
        """Fourier gain ``lambda conj(H) / (|H|^2 lambda + s^2)`` and posterior variances ``lambda s^2 / (...)``."""
        lam = self.spectrum(device)
        den = mult.abs() ** 2 * lam + s**2
        pos = den > 0
        safe = torch.where(pos, den, torch.ones_like(den))
        gain = torch.where(pos, lam * mult.conj() / safe, torch.zeros_like(mult))
        var = torch.where(pos, lam * s**2 / safe, lam.expand_as(den))
        return gain, var

    def _prepare(self, y: Tensor, operator, sigma_y):
        if not isinstance(y, Tensor) or y.dim() != 4:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"y: expected a (B, ...) measurement tensor with 4 dims, got {got}")
        if operator is not None:
            x_shape = tuple(operator.x_shape(tuple(y.shape)))
            if x_shape[1:] != self.shape:
                raise ValueError(
                    f"operator: maps {tuple(y.shape)} measurements to images {x_shape}, "
                    f"expected images of shape (B, {', '.join(map(str, self.shape))})"
                )
        s = _sigma64(sigma_y, y.shape[0], y.device)
        return y.to(_F64), s, self.fft_multiplier(operator, device=y.device)

    def _kalman_update(self, x: Tensor, residual: Tensor, operator: LinearOperator, s: Tensor) -> Tensor:
        """``x + Sigma A^T (A Sigma A^T + s^2 I)^{-1} residual`` by conjugate gradients (float64)."""
        s2 = s**2

        def matvec(v: Tensor) -> Tensor:
            return operator.A(self.covariance_matvec(operator.At(v))) + s2 * v

        u = conjugate_gradient(matvec, residual, tol=self.cg_tol, max_iter=self.cg_max_iter)
        return x + self.covariance_matvec(operator.At(u))

    def posterior_mean(self, y: Tensor, operator: LinearOperator | None, sigma_y: float | Tensor) -> Tensor:
        r"""Exact ``E[x | y]`` for ``y = A x + n``, ``n ~ N(0, sigma_y^2 I)`` (model units).

        ``m + Sigma A^T (A Sigma A^T + sigma_y^2 I)^{-1} (y - A m)``: in closed form per DFT frequency when ``A`` is
        FFT-diagonal (see :meth:`fft_multiplier`), else by conjugate gradients (tolerance :attr:`cg_tol`).
        ``sigma_y = 0`` (noiseless) is handled (consistent CG system / zero-variance frequencies).

        Args:
            y: measurement ``(B, ...)`` of the operator's output shape.
            operator: any :class:`~zsir.operators.LinearOperator`; ``None`` is the identity.
            sigma_y: float or per-sample tensor (B values or ``(B, 1, 1, 1)``), model units.

        Returns:
            ``(B, C, H, W)`` in ``y``'s dtype.
        """
        y64, s, mult = self._prepare(y, operator, sigma_y)
        m = self._m(y64).expand(y.shape[0], *self.shape)
        if mult is not None:
            gain, _ = self._fft_posterior(mult, s, y.device)
            M = _fft(m)
            out = _ifft(M + gain * (_fft(y64) - mult * M))
        else:
            out = self._kalman_update(m, y64 - operator.A(m), operator, s)
        return out.to(y.dtype)

    def posterior_sample(
        self,
        y: Tensor,
        operator: LinearOperator | None,
        sigma_y: float | Tensor,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Exact samples of ``p(x | y)``, shape ``(num_samples, B, C, H, W)`` in ``y``'s dtype.

        FFT-diagonal operators: ``mean + ifft(sqrt(v_f) fft(z))`` with the posterior variances ``v_f``. Otherwise
        Matheron's rule: ``x ~ prior``, ``n ~ N(0, sigma_y^2 I)``,
        ``x + Sigma A^T (A Sigma A^T + sigma_y^2 I)^{-1} (y - A x - n)`` (sigma_y in model units).
        """
        if int(num_samples) < 1:
            raise ValueError(f"num_samples: expected a positive int, got {num_samples}")
        N, B = int(num_samples), y.shape[0]
        y64, s, mult = self._prepare(y, operator, sigma_y)
        if mult is not None:
            mean = self.posterior_mean(y64, operator, s)
            _, var = self._fft_posterior(mult, s, y.device)
            z = _randn64((N, B, *self.shape), generator, y.device)
            out = mean + _ifft(var.sqrt() * _fft(z))
        else:
            x = self.sample(N * B, generator, device=y.device, dtype=_F64)
            noise = s.repeat(N, 1, 1, 1) * _randn64((N * B, *y.shape[1:]), generator, y.device)
            y_rep = y64.repeat(N, *([1] * (y.dim() - 1)))
            out = self._kalman_update(x, y_rep - operator.A(x) - noise, operator, s.repeat(N, 1, 1, 1))
            out = out.reshape(N, B, *self.shape)
        return out.to(y.dtype)

    def posterior_variance(
        self, operator: LinearOperator | None, sigma_y: float | Tensor, batch_size: int = 1, *, device=None
    ) -> Tensor:
        """Exact per-pixel posterior variance ``(B, C, H, W)`` (float64) for an FFT-diagonal operator (the
        posterior is stationary, so it is constant over pixels: ``mean_f v_f``). Raises ValueError otherwise."""
        mult = self.fft_multiplier(operator, device=device)
        if mult is None:
            raise ValueError(
                f"operator: posterior_variance needs an FFT-diagonal operator, got {type(operator).__name__}"
            )
        s = _sigma64(sigma_y, batch_size, device)
        _, var = self._fft_posterior(mult, s, device)
        return var.mean(dim=(-2, -1), keepdim=True).expand(batch_size, *self.shape).clone()
