r"""Timestep and noise-level schedules shared by the samplers.

All noise levels returned here are in **[-1, 1] model units** (VE std) unless a name says otherwise. The
formulas follow the official codes in float32, so the integer timesteps match the printed lists of rdmd.md 1.2
and cm4ir.md 1.2 exactly (a float64 re-implementation can shift :func:`zsir.units.timestep_from_sigma` ties by one
step). The DDPM linear table is :func:`zsir.priors.diffusion.ddpm_linear_alphas_cumprod`, re-exported here.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from zsir import units
from zsir.priors.diffusion import ddpm_linear_alphas_cumprod

__all__ = [
    "ddpm_linear_alphas_cumprod",
    "mcgdiff_alphas_cumprod",
    "mcgdiff_timesteps",
    "quad_timesteps",
    "uniform_timesteps",
    "dpir_sigmas",
    "cm4ir_taus",
    "truncate_to_prior",
    "prior_alphas_cumprod",
    "diffusion_levels",
]


def mcgdiff_alphas_cumprod(num_steps: int = 1000) -> np.ndarray:
    """The alpha-bar table of the MCGdiff Gaussian-mixture experiment (offline.md 1.1), float64.

    ``betas = linspace(0.02, 1e-4, T - 1)`` (**descending**, as the authors' ``gmm.py``) and
    ``abar = cumprod([1, 1 - betas])``: ``T`` entries with ``abar_0 = 1`` (level 0) and ``abar_{T-1} ~ 4e-5``.
    """
    betas = np.linspace(0.02, 1e-4, num_steps - 1, dtype=np.float64)
    return np.cumprod(np.concatenate([[1.0], 1.0 - betas]))


def mcgdiff_timesteps(alphas_cumprod, singular_values, sigma_y: float, num_steps: int) -> list[int]:
    r"""MCGdiff's grid adapted to the operator (offline.md 1.1), noisiest first, ``num_steps`` levels above 0.

    The grid starts at ``t = 0`` and adds ``t`` each time ``sqrt(abar_t)`` has dropped by a fixed amount since the
    last kept step (even spacing in ``sqrt(abar)`` down to ``sqrt(abar) = 0.01``), and at every such ``t`` where the
    state's noise matches the noise of ``y`` on a singular value ``s_i``, ``argmin_t |sigma_y^2 abar_t - (1 - abar_t)
    s_i^2|``; the remaining steps are spread evenly in ``t`` up to ``T - 1`` (matches in that noisiest part are
    not added, as in the authors' loop). ``t = 0`` (level 0, the end point of every sampler) is then dropped, so
    ``num_steps`` network calls remain. ``sigma_y`` is the measurement noise std in the units the sampler runs in
    (model units; for the :mod:`zsir.gmm` problems their own units).

    This follows the stated intent of the authors' ``get_optimal_timesteps_from_singular_values``; their code
    takes the arg-min over the flattened, sorted ``torch.unique`` of all distances, which keeps at most one such
    step whose index is not a timestep. The difference is at most ``d_y`` steps of the grid.
    """
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    s = np.asarray(singular_values, dtype=np.float64).reshape(-1)
    n = int(num_steps) + 1  # the grid includes t = 0
    dist = np.abs(sigma_y**2 * abar[None, :] - (1.0 - abar)[None, :] * s[:, None] ** 2)
    matched = {int(t) for t in dist.argmin(axis=1) if t > 0}
    root = np.sqrt(abar)
    end = int(np.nonzero(root < 1e-2)[0][0])
    increase = (root[0] - root[end]) / max(n - 1 - len(matched), 1)
    grid, last = [0], root[0]
    for t in range(1, end):
        if len(grid) == n:
            break
        if last - root[t] >= increase or t in matched:
            grid.append(t)
            last = root[t]
    if len(grid) < n:
        fill = np.ceil(np.linspace(grid[-1], len(abar) - 1, n - len(grid) + 1))[1:]
        grid += [int(t) for t in fill]
    return grid[1:][::-1]


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
    start, end = np.log10(units.sigma_to_8bit(sigma_start)), np.log10(units.sigma_to_8bit(sigma_end))
    return units.sigma_from_8bit(np.logspace(start, end, num_iters).astype(np.float32))


def cm4ir_taus(i_n: int, gamma: float, num_steps: int = 4) -> list[float]:
    r"""CM4IR noise levels ``tau_N .. tau_1`` (noisiest first), model units (cm4ir.md 1.2).

    ``abar_N = abar[iN + 1]`` of the DDPM linear table, then ``abar_{k-1} = min((1 + gamma) abar_k, 0.9999)`` and
    ``tau_k = clamp(sqrt(1 - abar_k), 0.002, 80)``, all in float32 as the official code (``iN <= 998``).
    """
    f32 = np.float32
    abar = ddpm_linear_alphas_cumprod()[i_n + 1]
    taus = []
    for _ in range(num_steps):
        taus.append(float(np.clip(np.sqrt(f32(1.0) - abar), f32(0.002), f32(80.0))))
        abar = np.minimum(f32(1.0 + gamma) * abar, f32(0.9999))
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


def diffusion_levels(timesteps, alphas_cumprod: np.ndarray) -> list[float]:
    """VE levels ``sigma_t`` (model units) of noisiest-first ``timesteps`` of an alpha-bar table, followed by ``0.0``
    (the clean end point that the last step of a DDIM / DDPM-type sampler moves to)."""
    table = units.sigma_from_abar(np.asarray(alphas_cumprod))
    return [float(table[int(t)]) for t in timesteps] + [0.0]
