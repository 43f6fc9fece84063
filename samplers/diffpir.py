r"""DiffPIR: denoising diffusion models for plug-and-play image restoration.

Y. Zhu, K. Zhang, J. Liang, J. Cao, B. Wen, R. Timofte, L. Van Gool, *Denoising Diffusion Models for Plug-and-Play
Image Restoration*, CVPRW (NTIRE) 2023, arXiv:2305.08995 (MIT-licensed official code, ``generate_mode: DiffPIR``,
``sub_1_analytic``, ``eta = 0``; rewritten in zsir's VE form).

All states are VE in model units, ``x = x0 + sigma eps`` (the paper's VP state divided by ``sqrt(abar_t)``). With
the quad-spaced levels ``sigma_{t_k}`` (:func:`~zsir.samplers.schedules.quad_timesteps`), for ``k < N - 1``:

.. math::

    x_0 &= D(x, \sigma_{t_k})\\
    \hat x_0 &= \arg\min_z \|y - A z\|^2 + \rho_k \|z - x_0\|^2
              = \mathrm{prox}_{l2}(x_0, y, \gamma = 1 / \rho_k),\qquad
        \rho_k = \lambda \max(\sigma_y^{[0,1]}, 10^{-3})^2 / \sigma_{t_k}^2\\
    \hat\epsilon &= (x - \hat x_0) / \sigma_{t_k}\\
    x &\leftarrow \hat x_0 + \sigma_{t_{k+1}} (\sqrt{1 - \zeta}\, \hat\epsilon + \sqrt{\zeta}\, n)

and the last step returns ``x_0 = D(x, sigma_{t_{N-1}})`` without a data step (as the official code). **Units:**
``rho`` uses ``sigma_y`` in **[0, 1] image units** (:func:`zsir.units.sigma_to_image` of the model-unit input,
floored at 1e-3 as the code), like RDMD; ``sigma_t`` is the VE level of the [-1, 1] image. The data sub-problem is
invariant under the affine [0, 1] -> [-1, 1] map (both terms scale by 4), so solving it in model units with the
same ``rho`` reproduces the official [0, 1] solver. ``operator.prox_l2(z, y, gamma)`` minimises
``gamma/2 ||A x - y||^2 + 1/2 ||x - z||^2``, hence ``gamma = 1 / rho_k``. In Bayesian terms this is the MAP of
``||y - A x||^2 / (2 sigma_m^2) + lambda / 4 * ||x - x_0||^2 / (2 sigma_t^2)`` with ``sigma_m = 2 sigma_y^{[0,1]}``:
``lambda = 4`` treats ``x_0`` as a Gaussian guess of variance ``sigma_t^2``.

**NFE = N** (one prior call per step). **Noise injection** (``noise_injection=True``, docs/samplers/cm4ir.md):
the re-noising becomes ``x_hat0 + sigma' (eta_ni n + sqrt(1 - eta_ni^2) (-eps_hat))``. **Start truncation**: a
prior whose ``sigma_max`` is below the first level starts at the first level it covers from the informative
``x = A^+ y + sigma n``.

**Perception-distortion knob:** ``zeta = 1 - 0.7 pd`` (``pd = 0``: fresh noise at every step, lowest distortion;
``pd = 1``: ``zeta = 0.3``, mostly deterministic re-noising with the estimated noise, which carries the data-step
corrections and the detail of earlier steps forward). The distortion grows monotonically with ``pd`` on exact
Gaussian problems (MSE to the exact posterior mean, ``tests/test_baselines.py``) and on held-out CBSD68 crops with
the built-in prior and FFDNet (``benchmarks/pd.py``). The knob stops at 0.3, not at the official configs' 0.1:
with FFDNet on Gaussian deblurring PSNR rose again by 0.40 dB between ``zeta`` 0.325 and 0.1 (from the tuned
preset; 0.53 dB from the generic setting). At ``pd = 1`` PSNR is between 0.4 dB lower and 0.7 dB higher than at
0.1 (BENCHMARKS.md).
"""

from __future__ import annotations

from torch import Tensor

from zsir import units
from zsir.operators.base import LinearOperator
from zsir.priors.base import Prior
from zsir.samplers.base import DiffusionSampler, Preset, register_sampler
from zsir.samplers.params import NOISE_INJECTION, Param, Schema
from zsir.samplers.steps import initial_state, noise_estimate, renoise_or_inject

__all__ = ["DiffPIR", "diffpir_rho"]


def diffpir_rho(lambda_: float, sigma_y: Tensor, sigma_t: float) -> Tensor:
    """``rho_t = lambda max(sigma_y / 2, 1e-3)^2 / sigma_t^2`` for a **model-unit** ``sigma_y`` (B, 1, 1, 1)."""
    return lambda_ * units.sigma_to_image(sigma_y).clamp_min(1e-3) ** 2 / sigma_t**2


@register_sampler("diffpir")
class DiffPIR(DiffusionSampler):
    """DiffPIR sampler (see the module docstring for the update equations, units and the pd mapping).

    Hyperparameters: :attr:`schema` (paper symbols).
    """

    name = "diffpir"
    default_steps = 100
    state_images = 10  # measured: 6.0 to 12.1 images incl. y (tests/test_memory.py; 12.1 with the hole fill)
    spacing = "quad"
    schema = Schema(
        Param(
            "lambda_",
            float,
            1.0,
            "data-prior trade-off lambda (1: the official configs)",
            low=0.0,
            low_open=True,
            search=(0.1, 50.0),
            log=True,
        ),
        Param(
            "zeta",
            float,
            0.1,
            "fresh-noise share of the re-noising (0.1: the official SR / deblur configs)",
            low=0.0,
            high=1.0,
            search=(0.0, 1.0),
        ),
        *NOISE_INJECTION,
    )
    presets = {
        "sr": Preset(
            "DiffPIR official configs/sisr.yaml: SR x4, sigma_y 12.75/255, 100 steps, lambda 1, zeta 0.1",
            {"steps": 100, "lambda_": 1.0, "zeta": 0.1},
        ),
        "deblur": Preset(
            "DiffPIR official configs/deblur.yaml: Gaussian/motion deblur, sigma_y 12.75/255, 100 steps, lambda 1, "
            "zeta 0.1",
            {"steps": 100, "lambda_": 1.0, "zeta": 0.1},
        ),
        "inpaint": Preset(
            "DiffPIR official configs/inpaint.yaml: noiseless inpainting, 20 steps, lambda 1, zeta 1",
            {"steps": 20, "lambda_": 1.0, "zeta": 1.0},
        ),
        "deepinv": Preset(
            "deepinv.sampling.DiffPIR defaults: 100 steps, deepinv's lambda 7, zeta 0.1 (deepinv's data step is "
            "prox_l2 with gamma = 1 / (2 rho), i.e. twice zsir's rho: lambda_ 14 here)",
            {"steps": 100, "lambda_": 14.0, "zeta": 0.1},
        ),
    }

    def __init__(self, prior: Prior, *, steps: int | None = None, progress: bool = True, **hyperparameters):
        super().__init__(prior, steps=steps, progress=progress, **hyperparameters)
        if self.steps < 2:
            raise ValueError(f"steps: DiffPIR's quad schedule needs at least 2 steps, got {self.steps}")

    @classmethod
    def pd_params(cls, pd: float) -> dict:
        """``zeta = 1 - 0.7 pd``."""
        return {"zeta": 1.0 - 0.7 * pd}

    def run(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, generator) -> Tensor:
        p = self.params
        lam, zeta = p["lambda_"], p["zeta"]
        eta_ni = p["eta_ni"] if p["noise_injection"] else None
        k0, levels = self.start, self.levels
        x = initial_state(y, operator, levels[k0], generator, informative=k0 > 0, sigma_y=sigma_y)
        for k in range(k0, self.steps - 1):
            sigma = levels[k]
            x0 = self.denoise(x, sigma)
            x0 = operator.prox_l2(x0, y, 1.0 / diffpir_rho(lam, sigma_y, sigma))
            eps = noise_estimate(x, x0, sigma)
            x = renoise_or_inject(x0, eps, levels[k + 1], zeta, generator, eta_ni, out=eps)  # in eps_hat's memory
        return self.denoise(x, levels[self.steps - 1])
