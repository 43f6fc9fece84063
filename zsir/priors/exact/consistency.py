"""Exact consistency functions of the exact priors (closed form or ODE-solver precision)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from zsir.priors.exact._common import _F64, _check_shape, _fft, _Float64Prior, _ifft
from zsir.priors.exact.gaussian_image import GaussianImagePrior
from zsir.priors.exact.mixture import GaussianMixturePrior

__all__ = ["GaussianConsistency", "GaussianImageConsistency", "MixtureConsistency"]


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
    r"""Oracle consistency function of a :class:`GaussianMixturePrior` (docs/priors/exact.md).

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
