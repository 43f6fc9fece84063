r"""Exact priors: distributions whose denoisers, scores, consistency functions and posteriors are known in
closed form (or to ODE-solver precision). They exist to test samplers against the *true* posterior.

All classes follow the :class:`~zsir.priors.base.Prior` conventions: images ``(B, C, H, W)`` in model units,
variance-exploding noise ``x = x0 + sigma * eps`` with ``sigma`` in [-1, 1] model units. (For the synthetic
Gaussian-mixture benchmarks of :mod:`zsir.gmm` "model units" are simply the problem's own units.) Internally
everything is computed in float64 and cast back to the input dtype.

* :class:`GaussianImagePrior`: a stationary Gaussian image model with a power-law spectrum (circulant covariance,
  diagonal in the 2-D FFT). Exact MMSE denoiser, sampling, log-density, posterior mean and exact posterior
  samples under ``y = A x + n`` (closed form in the Fourier domain for FFT-diagonal operators, conjugate
  gradients plus Matheron's rule for every other operator).
* :class:`GaussianMixturePrior`: ``p(x) = sum_k w_k N(mu_k, Sigma_k)`` with isotropic or full covariances.
  Exact VE score, Tweedie denoiser, VP helpers, sampling and the exact posterior (again a mixture) under a linear
  Gaussian measurement (offline.md 1.5).
* :class:`GaussianConsistency`, :class:`GaussianImageConsistency`, :class:`MixtureConsistency`: exact
  consistency functions (kind ``"consistency"``) mapping ``x_sigma`` to the point ``x_{sigma_min}`` of its
  probability-flow ODE trajectory ``dx/dsigma = -sigma * score(x, sigma)``; ``f(x, sigma_min) = x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from zsir import units
from zsir.operators.base import LinearOperator, conjugate_gradient
from zsir.operators.matrix import MatrixOperator
from zsir.priors.base import Prior

__all__ = [
    "GaussianImagePrior",
    "GaussianMixturePrior",
    "GaussianConsistency",
    "GaussianImageConsistency",
    "MixtureConsistency",
]

_F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)


def _randn64(shape: Sequence[int], generator: torch.Generator | None, device) -> Tensor:
    """Float64 standard normals drawn on the generator's device, moved to ``device`` (exact references want
    float64 draws, unlike :func:`zsir.samplers.randn`, which draws float32)."""
    gdev = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=_F64).to(device)


def _check_shape(shape: Sequence[int], name: str = "shape") -> tuple[int, int, int]:
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name}: expected a (C, H, W) image shape of positive ints, got {shape}")
    return shape


def _sigma64(sigma: float | Tensor, batch: int, device, name: str = "sigma_y") -> Tensor:
    """A noise std (float, B values or (B,1,1,1)) as a float64 (B, 1, 1, 1) tensor on ``device``."""
    if isinstance(sigma, Tensor):
        sigma = sigma.detach().to("cpu", _F64)
    return units.as_sigma(sigma, batch, device=device, dtype=_F64, name=name)


def _fft(x: Tensor) -> Tensor:
    return torch.fft.fft2(x, norm="ortho")


def _ifft(x: Tensor) -> Tensor:
    return torch.fft.ifft2(x, norm="ortho").real


class _Float64Prior(Prior):
    """A prior whose buffers stay float64: ``.to(device)`` moves them, dtype casts (``.to(float32)``,
    ``.half()``) are ignored, so the exact computations keep full precision whatever dtype the caller uses.
    They are never tiled: their densities couple the whole image."""

    tile_size = 0

    def _apply(self, fn, recurse: bool = True):
        def keep64(t: Tensor) -> Tensor:
            out = fn(t)
            return t.to(out.device) if t.dtype == _F64 and out.dtype != _F64 else out

        return super()._apply(keep64, recurse)


# =====================================================================================================================
# Stationary Gaussian image prior
# =====================================================================================================================
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


# =====================================================================================================================
# Gaussian mixture prior
# =====================================================================================================================
class GaussianMixturePrior(_Float64Prior):
    r"""``p(x) = sum_k w_k N(x; mu_k, Sigma_k)`` on flattened images (offline.md 1.5 closed forms, float64).

    VE marginal: ``p_sigma = sum_k w_k N(mu_k, Sigma_k + sigma^2 I)``; the denoiser is Tweedie's
    ``D(x, sigma) = x + sigma^2 grad log p_sigma(x)``. Responsibilities use logsumexp.

    Args:
        means: ``(K, d)`` or ``(K, *shape)``.
        weights: ``(K,)`` non-negative, normalised to sum 1.
        covs: a float (shared isotropic ``c I``), ``(K,)`` isotropic per component, or ``(K, d, d)`` full
            (symmetric positive semi-definite; positive definite where ``log_prob``/``score`` are used at sigma=0).
        shape: image shape ``(C, H, W)`` with ``C H W = d``; default ``(d, 1, 1)`` (or ``means.shape[1:]``).

    Units: whatever the means are in ([-1, 1] model units for image priors, the problem's own units for the
    :mod:`zsir.gmm` benchmarks); sigma in the same units.
    """

    kind = "mmse"
    sigma_min = 0.0
    sigma_max = float("inf")

    def __init__(
        self,
        means: Tensor,
        weights: Tensor | Sequence[float],
        covs: float | Tensor = 1.0,
        shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        means = torch.as_tensor(means, dtype=_F64)
        if means.dim() < 2:
            raise ValueError(f"means: expected (K, d) or (K, C, H, W), got shape {tuple(means.shape)}")
        K = means.shape[0]
        if shape is None:
            shape = tuple(means.shape[1:]) if means.dim() == 4 else (int(np.prod(means.shape[1:])), 1, 1)
        self.shape = _check_shape(shape)
        d = int(np.prod(self.shape))
        if int(np.prod(means.shape[1:])) != d:
            raise ValueError(
                f"means: expected {d} values per component for shape {self.shape}, got shape {tuple(means.shape)}"
            )
        self.channels, self.d, self.K = self.shape[0], d, K
        w = torch.as_tensor(weights, dtype=_F64).flatten()
        if w.numel() != K or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights: expected {K} finite non-negative values with a positive sum, got {w.tolist()}")
        self.register_buffer("means", means.reshape(K, d).clone())
        self.register_buffer("weights", w / w.sum())
        c = torch.as_tensor(covs, dtype=_F64)
        if c.dim() == 0 or (c.dim() == 1 and c.numel() == K):
            c = c.expand(K).clone()
            if not torch.isfinite(c).all() or (c <= 0).any():
                raise ValueError(f"covs: expected positive isotropic variances, got {c.tolist()}")
            self.register_buffer("iso", c)
            self.register_buffer("covs", None)
        elif c.shape == (K, d, d):
            self.register_buffer("iso", None)
            self.register_buffer("covs", 0.5 * (c + c.transpose(1, 2)))
        else:
            raise ValueError(f"covs: expected a float, ({K},) or ({K}, {d}, {d}), got shape {tuple(c.shape)}")
        self.register_buffer("_evals", None)  # lazy eigendecomposition of full covariances
        self.register_buffer("_evecs", None)
        self.register_buffer("_root", None)  # lazy square roots for sampling

    # ----- helpers ----------------------------------------------------------------------------------------------
    def covariance_matrices(self) -> Tensor:
        """Dense component covariances ``(K, d, d)`` (float64)."""
        if self.iso is not None:
            return self.iso[:, None, None] * torch.eye(self.d, dtype=_F64, device=self.iso.device)
        return self.covs

    def mean(self) -> Tensor:
        """Mixture mean ``sum_k w_k mu_k``, shape ``(d,)``."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Mixture covariance ``sum_k w_k (Sigma_k + mu_k mu_k^T) - m m^T``, shape ``(d, d)``."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covariance_matrices())
        second = second + torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return second - torch.outer(m, m)

    def _eig(self) -> tuple[Tensor, Tensor]:
        if self._evals is None:
            e, q = torch.linalg.eigh(self.covs)
            self._evals, self._evecs = e.clamp_min(0.0), q
        return self._evals, self._evecs

    def _flat(self, x: Tensor, name: str = "x") -> Tensor:
        """(B, d) float64 view of x given as (B, d) or (B, *shape)."""
        if not isinstance(x, Tensor) or x.dim() < 2 or int(np.prod(x.shape[1:])) != self.d:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected (B, {self.d}) or (B, {', '.join(map(str, self.shape))}), got {got}")
        return x.reshape(x.shape[0], self.d).to(_F64)

    def _s2(self, sigma: float | Tensor, batch: int, device) -> Tensor:
        return _sigma64(sigma, batch, device, name="sigma").reshape(batch) ** 2

    def _stats(self, xf: Tensor, s2: Tensor, need_score: bool) -> tuple[Tensor, Tensor | None]:
        """Per-component ``log w_k + log N(x; mu_k, Sigma_k + s2 I)`` (B, K) and the mixture score (B, d)."""
        mu = self.means.to(xf.device)
        logw = torch.log(self.weights.to(xf.device))
        d = self.d
        if self.iso is not None:
            v = self.iso.to(xf.device)[None, :] + s2[:, None]  # (B, K)
            sq = ((xf**2).sum(1, keepdim=True) - 2.0 * xf @ mu.T + (mu**2).sum(1)[None, :]).clamp_min(0.0)
            logp = logw - 0.5 * (sq / v + d * torch.log(v) + d * _LOG_2PI)
            if not need_score:
                return logp, None
            gv = torch.softmax(logp, dim=1) / v
            return logp, gv @ mu - xf * gv.sum(1, keepdim=True)
        e, q = (t.to(xf.device) for t in self._eig())
        logps, scores = [], []
        for k in range(self.K):
            z = (xf - mu[k]) @ q[k]  # (B, d)
            v = e[k][None, :] + s2[:, None]
            logps.append(logw[k] - 0.5 * ((z**2 / v).sum(1) + torch.log(v).sum(1) + d * _LOG_2PI))
            if need_score:
                scores.append(-(z / v) @ q[k].T)
        logp = torch.stack(logps, dim=1)
        if not need_score:
            return logp, None
        gamma = torch.softmax(logp, dim=1)
        return logp, torch.einsum("bk,kbd->bd", gamma, torch.stack(scores))

    # ----- public API ---------------------------------------------------------------------------------------------
    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """``log p_sigma(x)``, shape ``(B,)`` float64; ``x`` is ``(B, d)`` or ``(B, *shape)``, sigma VE std."""
        xf = self._flat(x)
        logp, _ = self._stats(xf, self._s2(sigma, xf.shape[0], xf.device), need_score=False)
        return torch.logsumexp(logp, dim=1)

    def responsibilities(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """``gamma_k(x) = p(component k | x_sigma = x)``, shape ``(B, K)``."""
        xf = self._flat(x)
        logp, _ = self._stats(xf, self._s2(sigma, xf.shape[0], xf.device), need_score=False)
        return torch.softmax(logp, dim=1)

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        r"""``grad_x log p_sigma(x) = -sum_k gamma_k (Sigma_k + sigma^2 I)^{-1} (x - mu_k)``, shaped like ``x``."""
        xf = self._flat(x)
        _, sc = self._stats(xf, self._s2(sigma, xf.shape[0], xf.device), need_score=True)
        return sc.reshape(x.shape).to(x.dtype)

    def _denoise(self, x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        """Tweedie: ``x + sigma^2 grad log p_sigma(x)`` (exact MMSE)."""
        xf = self._flat(x)
        s2 = sigma.to(_F64).reshape(-1) ** 2
        _, sc = self._stats(xf, s2, need_score=True)
        return (xf + s2[:, None] * sc).reshape(x.shape).to(x.dtype)

    def _vp(self, x_t: Tensor, abar: float | Tensor) -> tuple[Tensor, Tensor]:
        a = _sigma64(abar, x_t.shape[0], x_t.device, name="abar")
        if (a <= 0).any() or (a > 1).any():
            raise ValueError(f"abar: expected values in (0, 1], got {a.flatten().tolist()}")
        return units.vp_to_ve(x_t.to(_F64), a), units.sigma_from_abar(a)

    def denoise_vp(self, x_t: Tensor, abar: float | Tensor) -> Tensor:
        """``E[x0 | x_t]`` for the VP state ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`` (abar float or per sample)."""
        x_ve, sigma = self._vp(x_t, abar)
        return self.denoise(x_ve, sigma).to(x_t.dtype)

    def eps_vp(self, x_t: Tensor, abar: float | Tensor) -> Tensor:
        """Exact epsilon-prediction ``-sqrt(1 - abar) grad log p_t(x_t)``, computed as
        ``-sigma grad log p_sigma(x_t / sqrt(abar))`` (stable as abar -> 1)."""
        x_ve, sigma = self._vp(x_t, abar)
        return (-sigma * self.score(x_ve, sigma)).to(x_t.dtype)

    def _sqrt_cov(self) -> Tensor:
        """``(K, d, d)`` factors ``L_k L_k^T = Sigma_k`` (Cholesky; eigen square root where it fails)."""
        if self._root is None:
            L, info = torch.linalg.cholesky_ex(self.covs)
            bad = info != 0
            if bad.any():
                e, q = torch.linalg.eigh(self.covs[bad])
                L[bad] = q * e.clamp_min(0.0).sqrt()[:, None, :]
            self._root = L
        return self._root

    def sample(self, n: int, generator: torch.Generator | None = None, *, return_components: bool = False):
        """``n`` exact samples ``(n, *shape)`` (float64, on the prior's device); optionally the component ids."""
        if int(n) < 1:
            raise ValueError(f"n: expected a positive number of samples, got {n}")
        n, dev = int(n), self.means.device
        gdev = generator.device if generator is not None else dev
        k = torch.multinomial(self.weights.to(gdev), n, replacement=True, generator=generator).to(dev)
        z = _randn64((n, self.d), generator, dev)
        if self.iso is not None:
            x = self.means[k] + self.iso[k].sqrt()[:, None] * z
        else:
            root, x = self._sqrt_cov(), self.means[k].clone()
            for c in torch.unique(k).tolist():
                sel = k == c
                x[sel] += z[sel] @ root[c].T
        x = x.reshape(n, *self.shape)
        return (x, k) if return_components else x

    # ----- posterior ----------------------------------------------------------------------------------------------
    def _dense(self, operator: LinearOperator | Tensor) -> Tensor:
        if isinstance(operator, Tensor):
            if operator.dim() != 2 or operator.shape[1] != self.d:
                raise ValueError(f"operator: expected an (m, {self.d}) matrix, got shape {tuple(operator.shape)}")
            return operator.to(_F64)
        if isinstance(operator, MatrixOperator):
            if operator.matrix.shape[1] != self.d:
                got = tuple(operator.matrix.shape)
                raise ValueError(f"operator: expected a matrix with {self.d} columns, got {got}")
            return operator.matrix.to(_F64)
        if not isinstance(operator, LinearOperator):
            raise TypeError(f"operator: expected a LinearOperator or an (m, d) tensor, got {type(operator).__name__}")
        dev = self.means.device
        cols = []
        for start in range(0, self.d, 256):
            idx = torch.arange(start, min(start + 256, self.d), device=dev)
            basis = torch.zeros(idx.numel(), self.d, dtype=_F64, device=dev)
            basis[torch.arange(idx.numel(), device=dev), idx] = 1.0
            cols.append(operator.A(basis.reshape(-1, *self.shape)).reshape(idx.numel(), -1))
        return torch.cat(cols).T.contiguous()

    def posterior(
        self, operator: LinearOperator | Tensor, y: Tensor, sigma_y: float | Tensor
    ) -> GaussianMixturePrior | list[GaussianMixturePrior]:
        r"""Exact posterior ``p(x | y)`` for ``y = A x + n``, ``n ~ N(0, sigma_y^2 I)`` (Kalman form, offline.md 1.5).

        ``G_k = A S_k A^T + s^2 I``, ``K_k = S_k A^T G_k^{-1}``, ``m_k = mu_k + K_k (y - A mu_k)``,
        ``S~_k = S_k - K_k A S_k``, ``w~_k ∝ w_k N(y; A mu_k, G_k)``. Stable for ``sigma_y -> 0`` as long as
        ``G_k`` stays invertible (full-row-rank ``A``).

        Args:
            operator: a :class:`~zsir.operators.MatrixOperator`, any :class:`~zsir.operators.LinearOperator` on
                images of :attr:`shape` (densified column by column), or a dense ``(m, d)`` tensor.
            y: ``(m,)`` for one measurement, or a batch ``(B, m)`` / ``(B, *y_shape)``.
            sigma_y: float, or one value per measurement (same units as the means).

        Returns:
            a :class:`GaussianMixturePrior` (full covariances, same :attr:`shape`) for one measurement, a list of
            them for a batch.
        """
        A = self._dense(operator).to(self.means.device)
        m = A.shape[0]
        y = torch.as_tensor(y)
        single = y.dim() == 1
        yb = (y[None] if single else y.reshape(y.shape[0], -1)).to(device=A.device, dtype=_F64)
        if yb.shape[1] != m:
            raise ValueError(f"y: expected {m} values per measurement, got shape {tuple(y.shape)}")
        B = yb.shape[0]
        s2 = _sigma64(sigma_y, B, A.device).reshape(B) ** 2
        S = self.covariance_matrices()  # (K, d, d)
        SAt = S @ A.T  # (K, d, m)
        r = yb[:, None, :] - (self.means @ A.T)[None]  # (B, K, m)
        eye = torch.eye(m, dtype=_F64, device=A.device)
        out = []
        for b in range(B):
            G = A @ SAt + s2[b] * eye  # (K, m, m)
            L, info = torch.linalg.cholesky_ex(G)
            if (info != 0).any():
                raise ValueError(
                    "sigma_y: A Sigma_k A^T + sigma_y^2 I is singular (sigma_y = 0 with a rank-deficient "
                    "operator); use a positive sigma_y or a full-row-rank operator"
                )
            sol = torch.cholesky_solve(r[b][..., None], L)[..., 0]  # G^{-1} r, (K, m)
            loglik = -0.5 * (
                (r[b] * sol).sum(1) + 2.0 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1) + m * _LOG_2PI
            )
            gain_t = torch.cholesky_solve(SAt.transpose(1, 2), L)  # (K, m, d) = G^{-1} A S = K_k^T
            means = self.means + (SAt @ sol[..., None])[..., 0]
            covs = S - SAt @ gain_t
            logw = torch.log(self.weights) + loglik
            out.append(GaussianMixturePrior(means, torch.softmax(logw, dim=0), covs, self.shape))
        return out[0] if single else out


# =====================================================================================================================
# Exact consistency functions
# =====================================================================================================================
class _ConsistencyBase(_Float64Prior):
    kind = "consistency"

    def __init__(self, shape: Sequence[int], sigma_min: float, sigma_max: float) -> None:
        super().__init__()
        self.shape = _check_shape(shape)
        self.channels = self.shape[0]
        if not (0.0 <= sigma_min < sigma_max):
            raise ValueError(f"sigma_min, sigma_max: expected 0 <= sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)


class GaussianConsistency(_ConsistencyBase):
    r"""Exact consistency function of ``N(mu, diag(s^2))`` (VE PF-ODE in closed form, per coordinate):

    .. math:: f(x, \sigma) = \mu + (x - \mu) \sqrt{s^2 + \sigma_{min}^2} / \sqrt{s^2 + \sigma^2},

    which maps ``x_sigma`` to its trajectory point at ``sigma_min`` (so ``f(x, sigma_min) = x``); with
    ``sigma_min = 0`` it is the PF-ODE map to ``x0``, ``mu + (x - mu) s / sqrt(s^2 + sigma^2)``.

    Args:
        mean: float or tensor broadcastable to ``shape`` (model units).
        std: float or positive tensor broadcastable to ``shape`` (model units).
        shape: image shape ``(C, H, W)``.
        sigma_min, sigma_max: noise range (model units), 0.002 and 80 by default (EDM/CM convention).
    """

    def __init__(
        self,
        mean: float | Tensor,
        std: float | Tensor,
        shape: Sequence[int],
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
    ) -> None:
        super().__init__(shape, sigma_min, sigma_max)
        s = torch.as_tensor(std, dtype=_F64)
        if not torch.isfinite(s).all() or (s <= 0).any():
            raise ValueError(f"std: expected positive finite values, got {s.flatten()[:8].tolist()}")
        self.register_buffer("mean", torch.as_tensor(mean, dtype=_F64).expand(self.shape).clone())
        self.register_buffer("std", s.expand(self.shape).clone())

    def _denoise(self, x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        mu, s = self.mean.to(x.device), self.std.to(x.device)
        sig = sigma.to(_F64)
        factor = torch.sqrt((s**2 + self.sigma_min**2) / (s**2 + sig**2))
        return (mu + (x.to(_F64) - mu) * factor).to(x.dtype)


class GaussianImageConsistency(_ConsistencyBase):
    """Exact consistency function of a :class:`GaussianImagePrior`: the closed form of
    :class:`GaussianConsistency` applied per orthonormal-DFT coefficient,
    ``f = m + ifft(sqrt((lambda + sigma_min^2) / (lambda + sigma^2)) fft(x - m))``."""

    def __init__(self, prior: GaussianImagePrior, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        super().__init__(prior.shape, sigma_min, sigma_max)
        self.prior = prior

    def _denoise(self, x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        self.prior._check(x)
        x64 = x.to(_F64)
        lam = self.prior.spectrum(x.device)
        m = self.prior._m(x64)
        factor = torch.sqrt((lam + self.sigma_min**2) / (lam + sigma.to(_F64) ** 2))
        return (m + _ifft(factor * _fft(x64 - m))).to(x.dtype)


class MixtureConsistency(_ConsistencyBase):
    r"""Oracle consistency function of a :class:`GaussianMixturePrior` (offline.md 1.5).

    Integrates the VE PF-ODE ``dx/dsigma = -sigma grad log p_sigma(x)`` with the exact mixture score from
    ``sigma`` down to ``sigma_min`` (scipy ``solve_ivp``, DOP853, in ``t = log sigma``:
    ``dx/dt = -sigma^2 grad log p_sigma(x)``), one sample at a time. Also an exact DDIM(eta=0) map.

    Args:
        gmm_prior: the mixture.
        sigma_min, sigma_max: noise range (model units).
        rtol, atol: ODE tolerances.
    """

    def __init__(
        self,
        gmm_prior: GaussianMixturePrior,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rtol: float = 1e-8,
        atol: float = 1e-10,
    ) -> None:
        if not isinstance(gmm_prior, GaussianMixturePrior):
            raise TypeError(f"gmm_prior: expected a GaussianMixturePrior, got {type(gmm_prior).__name__}")
        super().__init__(gmm_prior.shape, sigma_min, sigma_max)
        self.gmm = gmm_prior
        self.rtol, self.atol = float(rtol), float(atol)

    def flow(self, x: np.ndarray, sigma_from: float, sigma_to: float) -> np.ndarray:
        """Transport one flat state ``x`` (d,) along the PF-ODE from ``sigma_from`` to ``sigma_to`` (both > 0)."""
        if sigma_from == sigma_to:
            return x

        def rhs(t: float, v: np.ndarray) -> np.ndarray:
            s = math.exp(t)
            xf = torch.from_numpy(v).to(self.gmm.means.device)[None]
            _, sc = self.gmm._stats(xf, torch.full((1,), s * s, dtype=_F64, device=xf.device), need_score=True)
            return (-(s * s) * sc[0]).cpu().numpy()

        sol = solve_ivp(
            rhs, (math.log(sigma_from), math.log(sigma_to)), x, method="DOP853", rtol=self.rtol, atol=self.atol
        )
        if not sol.success:
            raise RuntimeError(f"MixtureConsistency: PF-ODE integration failed: {sol.message}")
        return sol.y[:, -1]

    def _denoise(self, x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        xs = x.detach().reshape(x.shape[0], -1).to("cpu", _F64).numpy()
        sig = sigma.detach().reshape(-1).to("cpu", _F64).tolist()
        target = max(self.sigma_min, 1e-12)
        out = np.stack([self.flow(xs[b], max(sig[b], target), target) for b in range(x.shape[0])])
        return torch.from_numpy(out).reshape(x.shape).to(device=x.device, dtype=x.dtype)
