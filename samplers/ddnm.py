r"""DDNM and DDNM+: zero-shot restoration by range-null-space decomposition.

Y. Wang, J. Yu, J. Zhang, *Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model*, ICLR 2023,
arXiv:2212.00490 (``svd_based_ddnm_plus`` of the MIT-licensed official code, rewritten in zsir's VE form).

All states are VE in model units, ``x = x0 + sigma eps`` (the paper's VP state divided by ``sqrt(abar_t)``);
``sigma_y`` is the per-sample model-unit noise std. One step from ``sigma`` to ``sigma'`` (DDIM ``eta``):

.. math::

    x_0 &= D(x, \sigma),\qquad \hat\epsilon = (x - x_0) / \sigma\\
    \hat x_0 &= x_0 - A^+ (A x_0 - y) \qquad\text{(DDNM: range from y, null space from } x_0)\\
    x' &= \hat x_0 + \sigma' (\sqrt{1 - \eta^2}\, \hat\epsilon + \eta\, n)

**DDNM+** (``plus=True``, the sampler ``"ddnm+"``) scales the correction per singular value so that the noise of
``y`` never exceeds the level ``sigma'`` of the next state. In the spectral layout (``c = V^T x``,
``y_bar = s^{-1} U^T y``), for an observed coefficient (``s_i > 0``) of a noisy sample:

.. math::

    \hat c_i &= c_{0,i} - \lambda_i (c_{0,i} - \bar y_i),\qquad
        \lambda_i = \begin{cases} 1 & \sigma' \ge \sigma_y / s_i\\
                                  \sqrt{1 - \eta^2}\, s_i \sigma' / \sigma_y & \text{else}\end{cases}\\
    c'_i &= \hat c_i + \begin{cases} \sqrt{\sigma'^2 - \sigma_y^2 / s_i^2}\; n_i & \sigma' > \sigma_y / s_i\\
                                     \eta \sigma'\, n_i & \sigma' < \sigma_y / s_i \end{cases}

so the total noise variance of ``c'_i`` is ``sigma'^2`` (the ``sqrt(1 - eta^2)`` factor is the official code's;
the paper's ``lambda_i = s_i sigma' / sigma_y`` is its ``eta = 0`` case). Unobserved coefficients and noiseless
samples get DDNM's update. This works for **every** :class:`~zsir.operators.SVDOperator` (bicubic SR and
separable deblurring included, which the official repository lacks, docs/samplers/ddnm.md). For other operators
(e.g. the FFT-diagonal ``CircularBlur``) DDNM+ falls back to a Tikhonov back-projection
``x0 - A^T (A A^T + zeta sigma_y^2 / sigma'^2 I)^{-1} (A x0 - y)`` (:func:`~zsir.samplers.steps.back_project`),
a smooth version of ``lambda_i`` (its factor ``s_i^2 sigma'^2 / (s_i^2 sigma'^2 + zeta sigma_y^2)`` is 1 while the
state is much noisier than ``y`` and 0 at ``sigma' = 0``), and plain DDIM re-noising. The last step goes to
``sigma' = 0``: a noiseless sample then satisfies ``A x = y`` exactly (a DDNM+ noisy sample keeps ``x0``, since
``lambda_i = 0``).

**Noise injection** (``noise_injection=True``; docs/samplers/cm4ir.md, a reconstruction): the DDIM re-noising of the
guided estimate (unobserved coefficients under DDNM+) becomes CM4IR's ``x0_hat + sigma' (eta_ni n + sqrt(1 - eta_ni^2)
(-eps_hat))``.

Steps: ``N`` timesteps, uniform skip of the prior's alpha-bar table (DDNM's ``T_sampling`` without time travel);
**NFE = N**. **Start truncation**: a prior whose ``sigma_max`` is below the first level starts at the first level
it covers from the informative ``x = A^+ y + sigma n``.

**Perception-distortion knob:** ``eta = 0.85 - 0.35 pd`` (``pd = 0``: the paper's 0.85; ``pd = 1``: 0.5, mostly
deterministic DDIM, which carries the errors and the detail of earlier steps forward). Measured (MSE to the exact
posterior mean, ``tests/test_baselines.py``; PSNR on held-out CBSD68 crops, ``benchmarks/pd.py``), the distortion
grows with ``pd``. The mapping before, ``eta = 1 - pd``, started DDNM+ at ``eta = 1``, where ``lambda_i = 0`` drops
the measurement from the coefficients noisier than it: 2.2 dB below ``eta = 0.85`` on SR x4 with the built-in
prior; below ``eta = 0.25`` the distortion on SR x4 falls again, and with FFDNet PSNR rises again below about
``eta = 0.45`` (random inpainting: +0.12 dB between ``eta`` 0.36 and 0.2 on one set of crops, +0.20 dB between
0.48 and 0.35 on another), hence the end at 0.5.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from zsir.operators.base import LinearOperator, SVDOperator
from zsir.samplers.base import DiffusionSampler, Preset, randn, register_sampler
from zsir.samplers.params import NOISE_INJECTION, Param, Schema
from zsir.samplers.steps import back_project, initial_state, noise_estimate, renoise_or_inject

__all__ = ["DDNM", "DDNMPlus"]


@register_sampler("ddnm")
class DDNM(DiffusionSampler):
    """DDNM sampler; ``plus=True`` (or the sampler ``"ddnm+"``) is DDNM+ (see the module docstring).

    Hyperparameters: :attr:`schema` (paper symbols); ``plus`` is False for ``"ddnm"`` and True for ``"ddnm+"``.
    """

    name = "ddnm"
    default_steps = 100
    schema = Schema(
        Param("eta", float, 0.85, "DDIM noise share", low=0.0, high=1.0, search=(0.0, 1.0)),
        Param("plus", bool, False, "per-singular-value noise handling of DDNM+"),
        Param(
            "zeta",
            float,
            1.0,
            "Tikhonov weight of DDNM+'s back-projection for non-SVD operators, eta_reg = zeta sigma_y^2 / sigma'^2",
            low=0.0,
            search=(0.01, 10.0),
            log=True,
        ),
        *NOISE_INJECTION,
    )
    presets = {
        "paper": Preset(
            "DDNM official configs: T_sampling 100, eta 0.85, no time travel (travel_length 1, travel_repeat 1)",
            {"steps": 100, "eta": 0.85},
        ),
    }

    @classmethod
    def pd_params(cls, pd: float) -> dict:
        """``eta = 0.85 - 0.35 pd``."""
        return {"eta": 0.85 - 0.35 * pd}

    def run(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, generator) -> Tensor:
        p = self.params
        if not p["plus"] and bool((sigma_y > 0).any()):
            warnings.warn(
                "plain DDNM ignores sigma_y > 0: it projects exactly onto A x = y, so the measurement noise stays in "
                "the result; use sampler 'ddnm+' (or plus=True) for noisy measurements",
                UserWarning,
                stacklevel=3,
            )
        eta = p["eta"]
        eta_ni = p["eta_ni"] if p["noise_injection"] else None
        spectral = p["plus"] and isinstance(operator, SVDOperator)
        k0, levels = self.start, self.levels
        x = initial_state(y, operator, levels[k0], generator, informative=k0 > 0, sigma_y=sigma_y)
        if spectral:
            plus = _PlusStep(operator, y, sigma_y, x, eta, eta_ni)
        for k in range(k0, self.steps):
            sigma, sigma_next = levels[k], levels[k + 1]
            x0 = self.denoise(x, sigma)
            if spectral:
                x = plus(x0, sigma, sigma_next, generator)
            else:
                x0_hat = self._project(x0, y, operator, sigma_y, sigma_next)
                x = renoise_or_inject(x0_hat, noise_estimate(x, x0, sigma), sigma_next, eta * eta, generator, eta_ni)
        return x

    def _project(self, x0: Tensor, y: Tensor, operator: LinearOperator, sigma_y: Tensor, sigma_next: float) -> Tensor:
        """DDNM's exact back-projection, or DDNM+'s fallback for operators without an SVD: the Tikhonov
        back-projection with ``eta_reg = zeta sigma_y^2 / sigma'^2`` (none for a noisy sample at ``sigma' = 0``)."""
        if not self.params["plus"]:
            return back_project(x0, y, operator)
        if sigma_next == 0.0:
            return torch.where(sigma_y > 0, x0, back_project(x0, y, operator))
        return back_project(x0, y, operator, self.params["zeta"] * sigma_y**2 / sigma_next**2)


class _PlusStep:
    """One DDNM+ update in the spectral layout (module docstring), with everything that does not change between
    steps (``y_bar``, the singular values and masks) computed once, and the state's coefficients ``c = V^T x``
    carried from step to step (``V`` is orthogonal), so a step transforms the image twice (``V^T x0``, ``V c'``)."""

    def __init__(self, op: SVDOperator, y: Tensor, sigma_y: Tensor, x: Tensor, eta: float, eta_ni: float | None):
        self.op, self.eta, self.eta_ni = op, eta, eta_ni
        self.c_x = op.Vt(x)
        s = op.singulars(tuple(x.shape), device=x.device, dtype=x.dtype)
        self.s, self.observed = s, s > 0
        s_safe = torch.where(self.observed, s, torch.ones_like(s))
        self.y_bar = op.Ut(y) / s_safe
        self.threshold = sigma_y / s_safe  # sigma' at which the noise of y_bar_i equals the state's noise
        self.noisy = self.observed & (sigma_y > 0)
        self.sy_safe = sigma_y.clamp_min(torch.finfo(x.dtype).tiny)

    def __call__(self, x0: Tensor, sigma: float, sigma_next: float, generator) -> Tensor:
        eta = self.eta
        c0 = self.op.Vt(x0)
        c_eps = noise_estimate(self.c_x, c0, sigma)
        low = self.noisy & (sigma_next < self.threshold)
        high = self.noisy & (sigma_next > self.threshold)
        lam = torch.where(low, (1.0 - eta * eta) ** 0.5 * self.s * sigma_next / self.sy_safe, torch.ones_like(c0))
        c_hat = torch.where(self.observed, c0 - lam * (c0 - self.y_bar), c0)
        std = torch.where(high, (sigma_next**2 - self.threshold**2).clamp_min(0.0).sqrt(), eta * sigma_next)
        c_noisy = c_hat + std * randn(c0.shape, generator, c0)
        c_ddim = renoise_or_inject(c_hat, c_eps, sigma_next, eta * eta, generator, self.eta_ni)
        self.c_x = torch.where(low | high, c_noisy, c_ddim)
        return self.op.V(self.c_x)


@register_sampler("ddnm+")
class DDNMPlus(DDNM):
    """DDNM+ (``DDNM`` with ``plus=True``): noise-aware range-null-space sampling for noisy measurements."""

    state_images = 16  # measured: 13.0 to 15.4 images incl. y (tests/test_memory.py)

    name = "ddnm+"
    schema = DDNM.schema.with_defaults(plus=True)
    presets = {
        "paper": Preset(
            "DDNM+ official configs (svd_based_ddnm_plus): T_sampling 100, eta 0.85, no time travel",
            {"steps": 100, "eta": 0.85},
        ),
    }
