r"""DPS: diffusion posterior sampling.

H. Chung, J. Kim, M. T. McCann, M. L. Klasky, J. C. Ye, *Diffusion Posterior Sampling for General Noisy Inverse
Problems*, ICLR 2023, arXiv:2209.14687, Algorithm 1. Written from the paper and the maths (the official code has
no licence).

DDPM ancestral sampling followed by a gradient step on the **un-squared, per-sample** residual norm. In zsir's VE
form (``x = x0 + sigma eps``, model units; the paper's VP state ``x^{VP}_t = sqrt(abar_t) x_t``), one step from
``sigma_t`` to ``sigma_s`` (``s`` the next, less noisy timestep; ``sigma_s = 0`` at the end):

.. math::

    \hat x_0 &= D(x_t, \sigma_t)\\
    x'_s &= \hat x_0 + \frac{\sigma_s^2}{\sigma_t^2} (x_t - \hat x_0)
           + \eta\, \sigma_s \sqrt{1 - \sigma_s^2 / \sigma_t^2}\; n
           \qquad\text{(the DDPM posterior } q(x_s | x_t, \hat x_0)\text{, variance } \tilde\beta)\\
    x_s &= x'_s - \frac{\zeta}{\sqrt{\bar\alpha_t \bar\alpha_s}}\,
           \nabla_{x_t} \| y_b - A \hat x_0(x_t)_b \|_2

``eta = 1`` (default) is the paper's DDPM step; ``eta < 1`` scales its noise, as the MCGdiff authors' DPS in their
Gaussian-mixture experiment (``eta`` 0.6 at 20 steps, 0.85 at 100). The factor ``1 / sqrt(abar_t abar_s)`` is the
exact VE translation of the paper's VP step ``x^{VP}_s = x'^{VP}_s - zeta grad_{x^{VP}_t} ||y - A x0_hat||``
(``abar = 1 / (1 + sigma^2)``), so ``zeta`` keeps the paper's values. The norm is taken **per sample** (batch
element ``b``), never over the batch, so a sample's update does not depend on the other samples (DPS issue #12).
The prior is differentiated (``needs_grad``): one forward and one backward pass per step; **NFE = N** (forward
calls; default 1000 steps as the paper, uniform respacing of the prior's alpha-bar table for fewer). The posterior
variance is the DDPM ``beta_tilde`` (``fixedsmall``); the paper's networks learn it (``learned_range``), which
zsir's denoiser protocol does not expose.

**Image size.** Dividing by the residual norm makes the step's per-pixel strength fall as ``1 / sqrt(pixels)``:
the same ``zeta`` pulls twice as hard on a 128 x 128 image as on the 256 x 256 ones the paper tuned it on, and
half as hard on a 512 x 512 one. ``zeta_scaling = "image-size"`` multiplies ``zeta`` by
``sqrt(C H W / (3 * 256 * 256))``, so a value keeps the per-pixel strength it has on a 256 x 256 colour image at
every size (identical to ``"paper"`` there). The default ``"paper"`` is the published step; zsir's tuned presets
use ``"image-size"``, so a preset tuned on 128-pixel crops keeps its per-pixel strength on other sizes (the best
strength still depends on the images: BENCHMARKS.md measures both scalings at 64, 128 and 256 px).

**The noise-unit trap.** DPS adds its ``sigma = 0.05`` to images in **[-1, 1]**, i.e. ``sigma_y = 0.025`` in
zsir's [0, 1] units; ``zsir.solve(sigma_y=0.05)`` is twice the paper's noise.

**Start truncation**: a prior whose ``sigma_max`` is below the first level starts at the first level it covers
from the informative ``x = A^+ y + sigma n``.

**Perception-distortion knob:** ``zeta = 10^(-pd)`` (1 at ``pd = 0`` down to 0.1 at ``pd = 1``; the paper's
0.3-0.5 sit in the middle). A larger step pulls each sample harder towards ``A x = y`` (lower distortion, at
the risk of off-manifold artefacts); ``zeta -> 0`` leaves unconditional prior samples (perfectly "realistic",
maximal distortion). Distortion decreases monotonically with ``zeta`` on exact Gaussian problems
(``tests/test_baselines.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from zsir import units
from zsir.operators.base import LinearOperator
from zsir.samplers.base import DiffusionSampler, Preset, Sampler, randn, register_sampler
from zsir.samplers.params import Param, Schema
from zsir.samplers.steps import initial_state

__all__ = ["DPS", "REFERENCE_NUMEL", "residual_norm_gradient", "zeta_factor"]

REFERENCE_NUMEL = 3 * 256 * 256
"""Values per sample of the images the paper's ``zeta`` was set for (256 x 256, colour)."""


def residual_norm_gradient(
    sampler: Sampler, x: Tensor, sigma: float, y: Tensor, operator: LinearOperator
) -> tuple[Tensor, Tensor]:
    r"""``(x0_hat, grad_x ||y_b - A x0_hat(x)_b||)``: one prior call with autograd; the norm is per sample."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        x0 = sampler.denoise(x, sigma)
        sq = (operator.A(x0) - y).flatten(1).pow(2).sum(1)
        norm = sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt()
        (grad,) = torch.autograd.grad(norm.sum(), x)
    return x0.detach(), grad


def zeta_factor(scaling: str, x: Tensor) -> float:
    """The factor ``zeta`` is multiplied by for a state ``x`` of shape ``(B, C, H, W)``: 1 for ``"paper"``,
    ``sqrt(C H W / REFERENCE_NUMEL)`` for ``"image-size"`` (see the module docstring)."""
    return math.sqrt(x[0].numel() / REFERENCE_NUMEL) if scaling == "image-size" else 1.0


@register_sampler("dps")
class DPS(DiffusionSampler):
    """DPS sampler (see the module docstring for the update equations, units and the pd mapping).

    Hyperparameters: :attr:`schema` (paper symbols).
    """

    name = "dps"
    default_steps = 1000
    needs_grad = True
    schema = Schema(
        Param(
            "zeta",
            float,
            0.5,
            "step size of the residual-norm gradient (0.5: official FFHQ inpainting; 0.3: SR and deblurring)",
            low=0.0,
            search=(0.01, 100.0),
            log=True,
        ),
        Param("eta", float, 1.0, "scale of the DDPM noise (1: the paper)", low=0.0, high=1.0, search=(0.0, 1.0)),
        Param(
            "zeta_scaling",
            str,
            "paper",
            "zeta as published (its per-pixel strength falls as 1 / sqrt(pixels)), or scaled by "
            "sqrt(C H W / (3 * 256 * 256)) so that it means the same at every image size",
            choices=("paper", "image-size"),
        ),
    )
    presets = {
        "sr4": Preset(
            "DPS official configs/super_resolution_config.yaml (FFHQ SR x4): 1000 steps, scale 0.3",
            {"steps": 1000, "zeta": 0.3},
        ),
        "deblur": Preset(
            "DPS official configs/{gaussian,motion}_deblur_config.yaml (FFHQ): 1000 steps, scale 0.3",
            {"steps": 1000, "zeta": 0.3},
        ),
        "inpaint": Preset(
            "DPS official configs/inpainting_config.yaml (FFHQ, random 30-70% masks): 1000 steps, scale 0.5",
            {"steps": 1000, "zeta": 0.5},
        ),
    }

    @classmethod
    def pd_params(cls, pd: float) -> dict:
        """``zeta = 10^(-pd)``."""
        return {"zeta": 10.0 ** (-pd)}

    def run(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, generator) -> Tensor:
        eta, k0, levels = self.params["eta"], self.start, self.levels
        x = initial_state(y, operator, levels[k0], generator, informative=k0 > 0, sigma_y=sigma_y).detach()
        zeta = self.params["zeta"] * zeta_factor(self.params["zeta_scaling"], x)
        for k in range(k0, self.steps):
            sigma, sigma_next = levels[k], levels[k + 1]
            x0, grad = residual_norm_gradient(self, x, sigma, y, operator)
            ratio = (sigma_next / sigma) ** 2
            x = x0 + ratio * (x - x0)
            if sigma_next > 0 and eta > 0:
                x = x + eta * sigma_next * math.sqrt(1.0 - ratio) * randn(x.shape, generator, x)
            x = x - zeta / math.sqrt(units.abar_from_sigma(sigma) * units.abar_from_sigma(sigma_next)) * grad
        return x
