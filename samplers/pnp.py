r"""PnP-HQS with the DPIR schedule: plug-and-play restoration with any MMSE denoiser prior.

K. Zhang, Y. Li, W. Zuo, L. Zhang, L. Van Gool, R. Timofte, *Plug-and-Play Image Restoration with Deep Denoiser
Prior*, IEEE TPAMI 2021, arXiv:2008.13751 (``utils_pnp.get_rho_sigma``, ``main_dpir_deblur.py``; docs/samplers/pnp.md).

Half-quadratic splitting with ``K`` iterations and log-spaced denoiser levels (``[0, 1]`` image units):

.. math::

    \sigma_k &= \mathrm{logspace}(\sigma_{start} \to \max(\sigma_{end,min}, \sigma_y^{[0,1]}),\, K)_k,\qquad
        \rho_k = \lambda \max(\sigma_y^{[0,1]}, 0.255/255)^2 / \sigma_k^2\\
    x_k &= \arg\min_x \|y - A x\|^2 + \rho_k \|x - z_{k-1}\|^2 = \mathrm{prox}_{l2}(z_{k-1}, y, \gamma = 1 / \rho_k)\\
    z_k &= D(x_k, 2 \sigma_k)

starting from the shared informative start ``z`` (:func:`~zsir.samplers.steps.informative_start`: bicubic
up-sampling for SR, the Wiener-regularised inverse for blurs, interpolated inpainting holes) and returning the last
``z``. The data step is invariant under the affine [0, 1] -> [-1, 1] map, so
``rho_k`` (a ratio of [0, 1]-unit stds) is used unchanged in model units; the denoiser receives ``2 sigma_k`` in
model units. Per-sample ``sigma_y`` gives per-sample schedules. **NFE = K** (``K + 2`` with ``texture > 0``).

**Texture** (``texture = t``, zsir's addition; the pd knob). ``t = 0`` (default) is DPIR: a deterministic point
estimate. For ``t > 0`` the last iteration adds the odd part of the denoiser's response to fresh noise
``n ~ N(0, I)`` of std ``t sigma_K`` ([0, 1] image units; ``2 t sigma_K`` in model units):

.. math::

    z_K = D(x_K, 2\sigma_K) + \tfrac12 \left[D(x_K + t \sigma_K n, 2\sigma_K) - D(x_K - t \sigma_K n, 2\sigma_K)\right]
      \approx D(x_K, 2\sigma_K) + t\,\sigma_K\, J_D(x_K)\, n .

By Tweedie's second-order identity the Jacobian of an MMSE denoiser is the posterior covariance over the level
squared, ``J_D = Cov[x | x_K] / sigma_K^2``, so the perturbation is noise shaped by what the prior considers
uncertain at the last level, not white noise; for ``t`` above about 1 the denoiser sees more noise than its level
and passes more of it on (grain). The perturbation is an odd function of ``n`` and ``n`` is symmetric, so its mean
is exactly zero: the expected squared error to any reference is that of ``t = 0`` plus the perturbation's energy
(``t^2 sigma_K^2 E||J n||^2`` for a linear denoiser; growing with ``t`` for the networks, measured). The distortion
therefore grows with ``t`` from **any** setting of the other parameters (a tuned preset included), without relying
on that setting being optimal (:func:`~zsir.samplers.steps.texture_probe`, shared with RDMD). The noise is drawn
only from the ``generator`` passed to the sampler (:func:`zsir.samplers.base.randn`): the same seed gives the same
output.

**Start truncation**: a prior whose ``sigma_max`` is below ``2 sigma_start`` (model units) starts at the first
level it covers (the initialisation is already informative).

**Perception-distortion knob:** ``texture = 2 pd``: ``pd = 0`` is the deterministic point estimate, ``pd = 1`` adds the
posterior-shaped perturbation of twice the last level. Measured (``benchmarks/pd.py``, BENCHMARKS.md), PSNR falls
monotonically with ``pd`` on every task with both priors and two sets of held-out crops, from the tuned presets and from
the generic setting (once up by 0.01 dB at ``pd = 0.25``: the realised cross term of the zero-mean perturbation on three
crops). Rejected knobs: a factor on the last denoiser level (``end_scale``) and on the data step's weight (``rho_scale =
2^-pd``) raised PSNR first on blurs and did nothing on random inpainting; re-noising the denoiser input at every
iteration (``D(x_k + eta sigma_k n, 2 sigma_k)``, as DiffPIR's ``zeta``) raised PSNR by up to 0.25 dB at ``eta = 0.5``
from the tuned presets (the denoiser, told ``sigma_k``, over-smooths the much cleaner ``x_k``; noise brings its input
back to its level) before it fell.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from zsir import units
from zsir.operators.base import LinearOperator
from zsir.priors.base import Prior
from zsir.samplers.base import Preset, Sampler, register_sampler
from zsir.samplers.params import Param, Schema
from zsir.samplers.schedules import dpir_sigmas, truncate_to_prior
from zsir.samplers.steps import informative_start, texture_probe

__all__ = ["PnP", "pnp_schedule"]

_RHO_FLOOR = units.sigma_from_8bit(0.255)  # DPIR: sigma = max(0.255/255, noise_level_model), [0, 1] units


def pnp_schedule(
    num_iters: int,
    sigma_y: float,
    lambda_: float = 0.23,
    sigma_start: float = 49.0 / 255.0,
    sigma_end_min: float = 0.6 / 255.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(sigma_k, rho_k)`` of DPIR's ``get_rho_sigma`` (``w = 1``), all stds in **[0, 1] image units**."""
    sigmas = dpir_sigmas(num_iters, max(sigma_end_min, sigma_y), sigma_start).astype(np.float64)
    rhos = lambda_ * max(sigma_y, _RHO_FLOOR) ** 2 / sigmas**2
    return sigmas, rhos


@register_sampler("pnp")
class PnP(Sampler):
    """PnP-HQS sampler with the DPIR schedule (see the module docstring).

    Hyperparameters: :attr:`schema` (paper symbols, stds in [0, 1] image units).
    """

    name = "pnp"
    default_steps = 8
    state_images = 10  # measured: 6.0 to 12.1 images incl. y (tests/test_memory.py; 12.1 with the hole fill)
    schema = Schema(
        Param(
            "lambda_",
            float,
            0.23,
            "DPIR's trade-off constant in rho_k",
            low=0.0,
            low_open=True,
            search=(0.01, 2.0),
            log=True,
        ),
        Param(
            "sigma_start",
            float,
            49.0 / 255.0,
            "first denoiser level, [0, 1] image units",
            low=0.0,
            low_open=True,
            search=(10.0 / 255.0, 100.0 / 255.0),
            log=True,
        ),
        Param(
            "sigma_end_min",
            float,
            0.6 / 255.0,
            "floor of the last denoiser level, [0, 1] image units (0.6/255 deblurring, SR factor/255 for SR)",
            low=0.0,
            low_open=True,
            search=(0.1 / 255.0, 10.0 / 255.0),
            log=True,
        ),
        Param(
            "texture",
            float,
            0.0,
            "std of the last step's antithetic noise probe, in units of the last level sigma_K (0: DPIR; pd)",
            low=0.0,
            high=4.0,
        ),
    )
    presets = {
        "deblur": Preset(
            "DPIR main_dpir_deblur.py: 8 iterations, sigma 49/255 -> max(0.6, 255 sigma_y)/255, lambda 0.23",
            {"steps": 8, "lambda_": 0.23, "sigma_start": 49.0 / 255.0, "sigma_end_min": 0.6 / 255.0},
        ),
        "sr4": Preset(
            "DPIR main_dpir_sisr.py, x4: 24 iterations, sigma 49/255 -> max(4, 255 sigma_y)/255, lambda 0.23",
            {"steps": 24, "lambda_": 0.23, "sigma_start": 49.0 / 255.0, "sigma_end_min": 4.0 / 255.0},
        ),
    }

    def __init__(self, prior: Prior, *, steps: int | None = None, progress: bool = True, **hyperparameters):
        super().__init__(prior, steps=steps, progress=progress, **hyperparameters)
        if prior.kind != "mmse":
            raise ValueError(f"prior: PnP needs an MMSE denoiser (kind 'mmse'), got kind {prior.kind!r}")
        self._start = truncate_to_prior(units.sigma_to_model(self._schedule(0.0)[0]), prior.sigma_max)

    def _schedule(self, sigma_img: float) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        return pnp_schedule(self.steps, sigma_img, p["lambda_"], p["sigma_start"], p["sigma_end_min"])

    def total_nfe(self) -> int:
        """One denoiser call per iteration: ``K`` (fewer under start truncation), plus 2 with ``texture > 0``."""
        return self.steps - self._start + (2 if self.params["texture"] > 0.0 else 0)

    @classmethod
    def pd_params(cls, pd: float) -> dict:
        """``texture = 2 pd``."""
        return {"texture": 2.0 * pd}

    def run(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, generator) -> Tensor:
        per_sample = [self._schedule(float(s)) for s in units.sigma_to_image(sigma_y).flatten()]
        as_t = lambda a: torch.as_tensor(np.stack(a, 1)).to(y)  # noqa: E731  (K, B)
        levels = as_t([units.sigma_to_model(sig) for sig, _ in per_sample])
        gammas = as_t([1.0 / rho for _, rho in per_sample])
        z = informative_start(y, operator, sigma_y)
        for k in range(self._start, self.steps):
            x = operator.prox_l2(z, y, gammas[k].view(-1, 1, 1, 1))
            z = self.denoise(x, levels[k])
        if self.params["texture"] > 0.0:  # model units: the level is 2 sigma_K, the probe's std t times it
            last = levels[-1].view(-1, 1, 1, 1)
            z = z + texture_probe(lambda v: self.denoise(v, levels[-1]), x, last, self.params["texture"], generator)
        return z
