"""The Gaussian mixture prior: exact VE score, Tweedie denoiser, sampling and the exact (mixture) posterior."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from zsir import units
from zsir.operators.base import LinearOperator
from zsir.operators.matrix import MatrixOperator
from zsir.priors.exact._common import _F64, _LOG_2PI, _check_shape, _Float64Prior, _randn64, _sigma64

__all__ = ["GaussianMixturePrior"]


class GaussianMixturePrior(_Float64Prior):
    r"""``p(x) = sum_k w_k N(x; mu_k, Sigma_k)`` on flattened images (closed forms in docs/priors/exact.md, float64).

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
        r"""Exact posterior ``p(x | y)`` for ``y = A x + n``, ``n ~ N(0, sigma_y^2 I)`` (the Kalman form below).

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
