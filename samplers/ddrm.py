r"""DDRM: Denoising Diffusion Restoration Models.

B. Kawar, M. Elad, S. Ermon, J. Song, *Denoising Diffusion Restoration Models*, NeurIPS 2022, arXiv:2201.11793
(``efficient_generalized_steps`` of the MIT-licensed official code, rewritten in zsir's VE form).

DDRM works in the spectral space of ``A = U diag(s) V^T``: ``c = V^T x`` (zsir's layout: coefficients shaped like
``x``, singulars ``s`` broadcastable, 0 where A has none) and ``y_bar = s^{-1} U^T y`` on the observed
coefficients. All states are VE in model units, ``x = x0 + sigma eps`` (the VP state of the paper divided by
``sqrt(abar_t)``); ``sigma_y`` is the per-sample model-unit noise std. One step from ``sigma`` to ``sigma'``, with
``x0 = D(x, sigma)``, ``c0 = V^T x0`` and ``c_eps = V^T (x - x0) / sigma``, per coefficient ``i``:

.. math::

    c'_i = \begin{cases}
        c_{0,i} + \sigma' (\sqrt{1 - \eta^2}\, c_{\epsilon,i} + \eta\, n_i)
            & s_i = 0 \text{ (unobserved)}\\
        c_{0,i} + \sigma' (\sqrt{1 - \eta^2}\, (s_i \bar y_i - s_i c_{0,i}) / \sigma_y + \eta\, n_i)
            & s_i \sigma' < \sigma_y \text{ (less noisy than y)}\\
        \eta_b \bar y_i + (1 - \eta_b) c_{0,i} + \sqrt{\sigma'^2 - \eta_b^2 \sigma_y^2 / s_i^2}\, n_i
            & s_i \sigma' > \sigma_y \text{ (noisier than y)}
    \end{cases}

and ``x' = V c'``. The last step goes to ``sigma' = 0``: its output is ``x0`` on the unobserved and the
less-noisy coefficients (for noiseless ``y``, where ``s_i sigma' = sigma_y = 0``, DDRM keeps ``c0`` everywhere,
as the official code). Steps: ``N`` timesteps with DDRM's uniform skip (``range(0, T, T // N)`` reversed) of the
prior's alpha-bar table (the DDPM linear table for continuous priors); **NFE = N**.

**Noise injection** (``noise_injection=True``; cm4ir.md 4, a reconstruction: no published code): on the
coefficients where DDRM re-uses the prior's noise estimate (the first case), DDIM's ``+c_eps`` is replaced by
CM4IR's reversed estimate, ``c0 + sigma' (eta_ni n + sqrt(1 - eta_ni^2) (-c_eps))``; the observed coefficients keep
DDRM's y-based updates.

**Start truncation.** A prior whose ``sigma_max`` is below the first level starts at the first level it covers
(:func:`~zsir.samplers.schedules.truncate_to_prior`) from the informative ``x = A^+ y + sigma n`` instead of pure
noise.

**Perception-distortion knob:** ``eta = 1 - pd`` (``pd = 0``: only fresh noise, lowest distortion; ``pd = 0.15``:
the paper's 0.85; ``pd = 1``: deterministic DDIM-like updates). Fresh noise lets the denoiser average out the
errors of the previous steps, while the deterministic chain carries them (and the detail) forward: on exact
Gaussian problems the distortion (MSE to the exact posterior mean) grows monotonically as ``eta`` decreases
(``tests/test_baselines.py``).

DDRM needs the closed-form SVD: a non-:class:`~zsir.operators.SVDOperator` raises TypeError (use DDNM, DiffPIR,
DPS or PnP for FFT or function operators).
"""

from __future__ import annotations

import torch
from torch import Tensor

from zsir.operators.base import LinearOperator, SVDOperator
from zsir.samplers.base import DiffusionSampler, Preset, randn, register_sampler
from zsir.samplers.steps import initial_state, noise_estimate, renoise_or_inject

__all__ = ["DDRM", "require_svd"]


def require_svd(operator: LinearOperator, sampler: str) -> SVDOperator:
    """Return ``operator`` if it is an :class:`SVDOperator`, else raise a TypeError naming the alternatives."""
    if not isinstance(operator, SVDOperator):
        raise TypeError(
            f"operator: {sampler} works in the spectral space of A and needs an SVDOperator (closed-form SVD), got "
            f"{type(operator).__name__}; for FFT or function operators use 'ddnm', 'diffpir', 'dps', 'pnp', 'rdmd' "
            f"or 'cm4ir'"
        )
    return operator


@register_sampler("ddrm")
class DDRM(DiffusionSampler):
    """DDRM sampler (see the module docstring for the update equations, units and the pd mapping).

    Hyperparameters (paper symbols):
        eta: fresh-noise share of the unobserved and less-noisy coefficients (``eta_A = eta_C``, 0.85).
        eta_b: weight of ``y_bar`` on the coefficients noisier than ``y`` (``eta_B``, 1).
        noise_injection: replace DDIM re-noising by CM4IR's injection (False); ``eta_ni`` its fresh share (0.1).
    """

    state_images = 16  # measured: 15.5 to 17.1 images incl. y (tests/test_memory.py)

    name = "ddrm"
    default_steps = 20
    hyperparameters = {"eta": 0.85, "eta_b": 1.0, "noise_injection": False, "eta_ni": 0.1}
    presets = {
        "paper": Preset(
            "DDRM (Kawar et al. 2022) README / paper default: 20 steps, uniform skip, eta 0.85, eta_b 1",
            {"steps": 20, "eta": 0.85, "eta_b": 1.0},
        ),
    }

    unit_interval = ("eta", "eta_b", "eta_ni")

    @classmethod
    def pd_params(cls, pd: float) -> dict:
        """``eta = 1 - pd``."""
        return {"eta": 1.0 - float(pd)}

    def run(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, generator) -> Tensor:
        op = require_svd(operator, "DDRM")
        eta, eta_b = float(self.params["eta"]), float(self.params["eta_b"])
        eta_ni = float(self.params["eta_ni"]) if self.params["noise_injection"] else None
        k0, levels = self.start, self.levels
        x = initial_state(y, op, levels[k0], generator, informative=k0 > 0, eta_reg=sigma_y**2)
        c_y = op.Ut(y)
        s = op.singulars(tuple(x.shape), device=x.device, dtype=x.dtype)
        observed = s > 0
        s_safe = torch.where(observed, s, torch.ones_like(s))
        y_bar = c_y / s_safe
        sy_safe = sigma_y.clamp_min(torch.finfo(x.dtype).tiny)
        c_x = op.Vt(x)  # spectral coefficients of the state, carried between steps (V is orthogonal)
        for k in range(k0, self.steps):
            sigma, sigma_next = levels[k], levels[k + 1]
            x0 = self.denoise(x, sigma)
            c0 = op.Vt(x0)
            c_eps = noise_estimate(c_x, c0, sigma)
            before = observed & (s * sigma_next > sigma_y)
            after = observed & (s * sigma_next < sigma_y)
            free = ~(before | after)
            eps = torch.where(after, (c_y - s * c0) / sy_safe, c_eps)
            c_next = renoise_or_inject(c0, eps, sigma_next, eta * eta, generator)
            if eta_ni is not None:
                c_next = torch.where(free, renoise_or_inject(c0, c_eps, sigma_next, 0.0, generator, eta_ni), c_next)
            std_b = (sigma_next**2 - (eta_b * sigma_y / s_safe) ** 2).clamp_min(0.0).sqrt()
            c_before = eta_b * y_bar + (1.0 - eta_b) * c0 + std_b * randn(c0.shape, generator, c0)
            c_x = torch.where(before, c_before, c_next)
            x = op.V(c_x)
        return x
