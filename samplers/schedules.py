r"""Timestep and noise-level schedules shared by the samplers.

All noise levels returned here are in **[-1, 1] model units** (VE std) unless a name says otherwise. The
formulas follow the official codes in float32, so the integer timesteps match the printed lists of rdmd.md 1.2
and cm4ir.md 1.2 exactly (a float64 re-implementation can shift ``nearest_t`` ties by one step).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

__all__ = [
    "ddpm_linear_alphas_cumprod",
    "sigma_table",
    "nearest_t",
    "quad_timesteps",
    "uniform_timesteps",
    "dpir_sigmas",
    "cm4ir_taus",
    "truncate_to_prior",
    "prior_alphas_cumprod",
    "diffusion_levels",
]


def ddpm_linear_alphas_cumprod(
    num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, dtype=np.float32
) -> np.ndarray:
    """DDPM "linear" alpha-bar table: ``cumprod(1 - linspace(beta_start, beta_end, T))`` (float32 as the codes)."""
    betas = np.linspace(beta_start, beta_end, num_steps, dtype=dtype)
    return np.cumprod(1.0 - betas, dtype=dtype)


def sigma_table(alphas_cumprod: np.ndarray | Tensor) -> np.ndarray:
    """VE-equivalent noise level of every timestep, ``sqrt(1 - abar_t) / sqrt(abar_t)`` (model units)."""
    a = alphas_cumprod.detach().cpu().numpy() if isinstance(alphas_cumprod, Tensor) else np.asarray(alphas_cumprod)
    return np.sqrt(1.0 - a) / np.sqrt(a)


def nearest_t(sigma: float | np.ndarray, table: np.ndarray) -> np.ndarray | int:
    """``argmin_t |table_t - sigma|`` (rdmd.md 1.1 ``find_nearest``); vectorised over ``sigma``."""
    s = np.asarray(sigma, dtype=table.dtype)
    idx = np.abs(table[None, :] - s.reshape(-1, 1)).argmin(axis=1)
    return int(idx[0]) if s.ndim == 0 else idx


def quad_timesteps(num_iters: int, num_train_steps: int = 1000) -> list[int]:
    """DiffPIR / RDMD "quad" spacing, from ``T - 1`` down to 0, dense near 0.

    ``seq_k = int(sqrt(linspace(0, T^2, N))_k)`` with the last entry reduced by one; ``t_k = T - 1 - seq_k``.
    """
    seq = [int(v) for v in np.sqrt(np.linspace(0, num_train_steps**2, num_iters))]
    seq[-1] -= 1
    return [num_train_steps - 1 - s for s in seq]


def uniform_timesteps(num_iters: int, num_train_steps: int = 1000) -> list[int]:
    """DDIM / DDRM uniform skip: ``range(0, T, T // N)`` reversed (noisiest first)."""
    skip = max(num_train_steps // num_iters, 1)
    return list(range(0, num_train_steps, skip))[:num_iters][::-1]


def dpir_sigmas(num_iters: int, sigma_end: float, sigma_start: float = 49.0 / 255.0) -> np.ndarray:
    """DPIR log-spaced noise levels in **[0, 1] image units**: ``logspace(log10 start, log10 end, N)``.

    RDMD uses ``sigma_start = 49/255`` and ``sigma_end = max(sf, 255 sigma_y) / 255`` (sf = 1 for deblurring).
    """
    return np.logspace(np.log10(sigma_start * 255.0), np.log10(sigma_end * 255.0), num_iters).astype(np.float32) / 255.0


def cm4ir_taus(i_n: int, gamma: float, num_steps: int = 4) -> list[float]:
    r"""CM4IR noise levels ``tau_N .. tau_1`` (noisiest first), model units (cm4ir.md 1.2).

    ``abar_N = abar[iN + 1]`` of the DDPM linear table (float64, as the official code), then
    ``abar_{k-1} = min((1 + gamma) abar_k, 0.9999)`` and ``tau_k = clamp(sqrt(1 - abar_k), 0.002, 80)``.
    """
    abar_table = ddpm_linear_alphas_cumprod(dtype=np.float64)
    abar = float(abar_table[i_n + 1])
    taus = []
    for _ in range(num_steps):
        taus.append(float(np.clip(np.sqrt(1.0 - abar), 0.002, 80.0)))
        abar = min((1.0 + gamma) * abar, 0.9999)
    return taus


def truncate_to_prior(sigmas, sigma_max: float) -> int:
    r"""Start index of a noisiest-first schedule for a prior that is only valid up to ``sigma_max``.

    Returns the first index ``k`` with ``sigmas[k] <= sigma_max`` (model units; a relative slack of 1e-6 absorbs
    float32 rounding), or the last index when every level is above ``sigma_max`` (so at least one step runs).
    Samplers start there **from an informative initialisation** (e.g. ``pinv(y)`` plus noise of that level)
    instead of pure noise: a denoiser prior (DRUNet-like, ``sigma_max`` ~ 0.4) or a consistency model
    (``sigma_max = 80``) never sees a level it was not trained for. Diffusion priors whose table covers the
    schedule (``sigma_max = sigma_{T-1}``) are not truncated.
    """
    levels = np.asarray([float(s) for s in sigmas], dtype=np.float64)
    ok = np.nonzero(levels <= float(sigma_max) * (1.0 + 1e-6))[0]
    return int(ok[0]) if ok.size else max(len(levels) - 1, 0)


def prior_alphas_cumprod(prior) -> np.ndarray:
    """The alpha-bar table parametrising a sampler's noise levels: ``prior.alphas_cumprod`` (float32 numpy) for a
    discrete-time diffusion prior, else the DDPM linear table (continuous, denoiser and exact priors)."""
    table = getattr(prior, "alphas_cumprod", None)
    if table is None:
        return ddpm_linear_alphas_cumprod()
    return np.asarray(table.detach().cpu().numpy() if isinstance(table, Tensor) else table, dtype=np.float32)


def diffusion_levels(timesteps, alphas_cumprod: np.ndarray | Tensor) -> list[float]:
    """VE levels ``sigma_t`` (model units) of noisiest-first ``timesteps``, followed by ``0.0`` (the clean end
    point that the last step of a DDIM / DDPM-type sampler moves to)."""
    table = sigma_table(alphas_cumprod)
    return [float(table[int(t)]) for t in timesteps] + [0.0]
