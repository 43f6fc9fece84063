r"""RDMD: Reconciling stochastic and deterministic strategies with a diffusion model in dual.

C. Wang, L. Guo, Z. Fu, S. Yang, H. Cheng, A. C. Kot, B. Wen, *Reconciling Stochastic and Deterministic
Strategies for Zero-shot Image Restoration using Diffusion Model in Dual*, CVPR 2025, arXiv:2503.01288.
Written from the paper and the maths (docs/samplers/rdmd.md), not from the unlicensed official code.

One persistent restoration variable ``z`` is updated by **one gradient step** on a combined objective whose two
prior terms come from the same diffusion model used in two ways (all images VE, [-1, 1] model units):

.. math::

    d &= D(z, \sigma'_k) \qquad\text{deterministic (RED) branch, DPIR log-spaced } \sigma'_k\\
    \hat x &= D(x, \sigma_{t_k}) \qquad\text{stochastic branch, diffusion state on the quad schedule}\\
    z &\leftarrow z - s_k \left(A^T(Az - y) + \mu (z - d) + \rho_k (z - \hat x)\right),\qquad
        s_k = \frac{1}{1 + \mu + \rho_k}\\
    \mu &= \lambda (1 - \tau) \sigma_y^2,\qquad \rho_k = \lambda \tau \max(\sigma_y, 10^{-3})^2 / \sigma_{t_k}^2\\
    x &\leftarrow z + \sigma_{t_{k+1}} \left(\sqrt{1-\zeta}\, \frac{x - z}{\sigma_{t_k}} + \sqrt{\zeta}\, n\right)

``sigma_y`` in the weights is in **[0, 1] image units** (the official code's convention; lambda absorbs the
factor 2), converted from the model-unit input with :func:`zsir.units.sigma_to_image`; ``sigma_t`` is the VE
level of timestep ``t_k``. The noise estimate of the re-noising uses the **updated** ``z``. The last iteration
has no data step; the output is ``z`` (``output="z"``, default, ``rdmd_sr.py``) or the last ``x_hat``
(``output="x0"``, ``rdmd_deblur.py``); zsir adds ``output="d"``, the deterministic estimate
``D(z, sigma'_{N-1})`` of the last ``z`` (one more call).

The VP network call of the paper, ``D_theta(v, t)``, is ``prior.denoise(v / sqrt(abar_t), sigma_t)``; the
diffusion state ``x`` is kept in VE form so the ``sqrt(abar)`` factors cancel. The deterministic branch feeds
the network ``z`` itself (``det_input_scaling="none"``, as the code: ``prior.denoise(z / sqrt(abar_t'),
sigma_t')``) or the consistently scaled input (``"sqrt_abar"``: ``prior.denoise(z, sigma_t')``). The two only
differ for discrete-time (VP-trained) priors; for VE-native priors (exact, denoiser, consistency) both feed
``z``. ``t'_k = timestep_from_sigma(2 sigma'_k)`` with ``sigma'_k = dpir_sigmas(N, max(sf, 255 sigma_y) / 255)`` in
[0, 1] units; priors without a timestep table receive ``2 sigma'_k`` directly.

**Data step** (``data_step``). The paper's update is one gradient step of step size ``s_k``. For a noiseless
sample ``sigma_y`` is floored at ``1e-3``, so ``rho_k ~ 1e-5 lambda tau / sigma_t^2`` while the data term has
weight 1: on the pixels ``A`` does not observe (inpainting holes) ``z`` moves by ``rho_k / (1 + rho_k)`` of the
way to the prior's estimate per iteration, i.e. the paper's update returns its initialisation there (measured:
random-80 % inpainting with the built-in prior gave 12.9 dB with mid-grey holes). ``"prox"`` replaces the step by
the exact minimiser of the same objective,

.. math::

    z \leftarrow \arg\min_z \|A z - y\|^2 + \mu \|z - d\|^2 + \rho_k \|z - \hat x\|^2
      = \mathrm{prox}_{l2}\left(\frac{\mu d + \rho_k \hat x}{\mu + \rho_k}, y, \gamma = \frac{1}{\mu + \rho_k}\right),

which keeps ``A z = y`` on the observed part and takes the prior's estimate on the rest (DiffPIR's data step).
``"auto"`` (default) uses it for noiseless samples only, so the paper's noisy settings are unchanged;
``"gradient"`` everywhere warns on a noiseless sample.

**Gaussian-denoiser priors** (zsir's variant, not the paper's: docs/samplers/rdmd.md, "RDMD with a denoiser
prior"). With the paper's weights ``mu = 0.025`` the RED pull is about 2 % per iteration, so ``z`` keeps most of the
measurement noise (denoising: z is nearly ``y``), and one gradient step per iteration recovers a frequency of a blur
only in proportion to ``|K|^2`` (motion blur: most frequencies have ``|K| < 0.1``). ``red_weight="sigma"`` grows the
RED weight like PnP's, ``mu_k = mu (sigma'_0 / sigma'_k)^2``; ``truncate="stochastic"`` keeps the deterministic
branch and the data step of the iterations a truncated prior cannot take (the stochastic branch, whose weight
``rho`` is negligible there, joins at ``k0``); the preset ``"denoiser"`` combines them with the exact data step and
``output="d"`` (``lambda_ = 5``, ``tau = 0``, 30 steps).

**Perception-distortion knob.** ``texture = 2 pd`` (zsir's addition, shared with PnP:
:func:`~zsir.samplers.steps.texture_probe`). ``texture = t > 0`` adds to the output the odd part of a
denoiser's response to fresh noise of ``t`` times its level, a zero-mean perturbation shaped by the prior's
posterior covariance (Tweedie: ``J_D = Cov / sigma^2``):

.. math::

    \text{out} \leftarrow \text{out} + \tfrac12\left[D(v + t \sigma n, \sigma) - D(v - t \sigma n, \sigma)\right],
    \qquad n \sim \mathcal N(0, I),

with ``D`` the deterministic branch's denoiser at its last level ``sigma = sigma'_{N-1}`` (model units; about the
measurement noise, like PnP's last level) and ``v`` the input of its last call (the last ``z``, scaled as that
branch scales it), for every ``output``. Its mean is exactly zero whatever ``v`` is, so the expected squared error
grows by the perturbation's energy and PSNR falls with ``pd`` from any setting, a tuned preset
included. ``tau`` (the paper's split between the branches) is no longer what pd moves: from the tuned presets
``tau -> 1`` moved PSNR by under 0.35 dB where it worked, and with the exact data step (``data_step="prox"``, the
``"denoiser"`` options the blur presets use) intermediate ``tau`` collapsed on motion blur (FFDNet 25.3 -> 13.4 dB
at ``tau`` 0.56, BENCHMARKS.md): the first stochastic iterations join with a small total prior weight
``mu + rho``, and the exact data step then amplifies the noise in the kernel's weak frequencies. Set ``tau``
explicitly to use the stochastic branch.

**NFE.** Two prior calls per iteration, minus the calls whose result is unused: ``2N - 2`` for ``output="z"``
(both calls of the last iteration), ``2N - 1`` for ``output="x0"`` or ``"d"``. A branch whose weight is zero for the
whole batch is not evaluated and not counted: ``tau = 1`` or ``sigma_y = 0`` gives ``mu = 0`` (the deterministic
branch disappears: noiseless RDMD is a DiffPIR-like sampler), ``tau = 0`` gives ``rho = 0`` (only the final
``x_hat`` of ``output="x0"`` is evaluated). ``texture > 0`` adds two calls.

**Start truncation.** A prior whose ``sigma_max`` is below ``sigma_{t_0}`` (e.g. a denoiser prior) starts at the
first iteration ``k0`` whose level it covers (:func:`~zsir.samplers.schedules.truncate_to_prior`), from the
informative initialisation ``x = z0 + sigma n`` (``truncate="all"``, default); ``truncate="stochastic"`` starts only
the stochastic branch there and runs the deterministic one and the data step from ``k = 0``.

**Initialisation** (``init``): ``"auto"`` (default) reproduces the official scripts' ``z`` where they apply and
falls back to the shared informative start otherwise: bicubic up-sampling of ``y`` when ``y`` is the image
down-scaled by an integer factor (``rdmd_sr.py``), ``y`` itself when it has the image's shape and the operator
observes every pixel (``rdmd_deblur.py``; blurs, identity), else ``"start"``:
:func:`~zsir.samplers.steps.informative_start` (the Wiener-regularised inverse with the pixels the operator never
observes interpolated: inpainting holes no longer start mid-grey). ``"pinv"`` is the plain Tikhonov
pseudo-inverse ``A^T (A A^T + sigma_y^2 I)^{-1} y`` (model units).
The diffusion state always starts as ``x = z + sigma_{t_0} n`` (``rdmd_sr.py``); ``rdmd_deblur.py``
starts from ``y / sqrt(abar_{t_y}) + sqrt(sigma_{t_0}^2 - sigma_{t_y}^2) n`` with ``t_y`` the timestep of
``2 sigma_y``, which differs by a factor ``1.0035`` on a signal of weight ``sqrt(abar_{999}) = 0.0064``
(docs/samplers/rdmd.md): outputs agree to float32 round-off.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zsir import units
from zsir.operators.base import LinearOperator
from zsir.priors.base import Prior
from zsir.samplers.base import Preset, Sampler, randn, register_sampler
from zsir.samplers.params import Param, Schema
from zsir.samplers.schedules import (
    ddpm_linear_alphas_cumprod,
    dpir_sigmas,
    prior_alphas_cumprod,
    quad_timesteps,
    truncate_to_prior,
)
from zsir.samplers.steps import (
    informative_start,
    ls_gradient,
    noise_estimate,
    renoise,
    scale_factor,
    texture_probe,
    unobserved_mask,
)

__all__ = ["RDMD", "rdmd_timesteps", "rdmd_det_timesteps", "rdmd_weights"]

_DET_SIGMA_START = units.sigma_from_8bit(49.0)  # DPIR "modelSigma1 = 49", [0, 1] units
_INITS = ("auto", "start", "pinv", "y", "bicubic")


def rdmd_timesteps(num_iters: int, alphas_cumprod: np.ndarray | None = None) -> list[int]:
    """Stochastic-branch timesteps ``t_k`` (quad spacing, ``T - 1`` down to 0), docs/samplers/rdmd.md."""
    table = ddpm_linear_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
    return quad_timesteps(num_iters, len(table))


def rdmd_det_timesteps(
    num_iters: int, sigma_y: float, sf: int = 1, alphas_cumprod: np.ndarray | None = None
) -> list[int]:
    """Deterministic-branch timesteps ``t'_k = timestep_from_sigma(2 sigma'_k)``, docs/samplers/rdmd.md.

    ``sigma_y`` is in **[0, 1] image units**; ``sf`` is the super-resolution factor (1 for deblurring).
    """
    table = units.sigma_from_abar(ddpm_linear_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod)
    return [int(t) for t in units.timestep_from_sigma(units.sigma_to_model(_det_sigmas(num_iters, sigma_y, sf)), table)]


def _det_sigmas(num_iters: int, sigma_y: float, sf: int) -> np.ndarray:
    """Deterministic-branch levels ``sigma'_k = dpir_sigmas(N, max(sf, 255 sigma_y) / 255)``, [0, 1] image units."""
    return dpir_sigmas(num_iters, units.sigma_from_8bit(max(sf, units.sigma_to_8bit(sigma_y))), _DET_SIGMA_START)


def rdmd_weights(lambda_: float, tau: float, sigma_y, sigma_t):
    r"""``(mu, rho_t, step)`` of the data step, docs/samplers/rdmd.md.

    ``sigma_y`` in **[0, 1] image units** (float or tensor), ``sigma_t`` the VE level of ``t_k`` (model units):
    ``mu = lambda (1 - tau) sigma_y^2``, ``rho = lambda tau max(sigma_y, 1e-3)^2 / sigma_t^2``,
    ``step = 1 / (1 + mu + rho)``.
    """
    floor = sigma_y.clamp_min(1e-3) if isinstance(sigma_y, Tensor) else max(sigma_y, 1e-3)
    mu = lambda_ * (1.0 - tau) * sigma_y**2
    rho = lambda_ * tau * floor**2 / sigma_t**2
    return mu, rho, 1.0 / (1.0 + mu + rho)


@register_sampler("rdmd")
class RDMD(Sampler):
    """RDMD sampler (see the module docstring for the update equations, units and NFE).

    Hyperparameters: :attr:`schema` (paper symbols, types, defaults, valid ranges). ``deterministic_prior`` is
    ``None`` (the diffusion prior itself) or another :class:`~zsir.priors.Prior` (e.g. a denoiser: the paper's
    dual-network variant); ``sf`` is the super-resolution factor of the sigma' schedule end,
    ``max(sf, 255 sigma_y) / 255``, inferred from the measurement shape when ``None``.
    """

    name = "rdmd"
    default_steps = 100
    schema = Schema(
        Param("lambda_", float, 20.0, "overall prior strength lambda", low=0.0, search=(1.0, 100.0), log=True),
        Param(
            "tau",
            float,
            0.5,
            "split between the deterministic (0) and stochastic (1) regulariser; pd maps to it",
            low=0.0,
            high=1.0,
            search=(0.0, 1.0),
        ),
        Param(
            "zeta",
            float,
            0.0,
            "fresh-noise share of the re-noising (0 SR, 0.3 deblurring in the code)",
            low=0.0,
            high=1.0,
            search=(0.0, 1.0),
        ),
        Param(
            "output",
            str,
            "z",
            "restoration variable z, the last stochastic-branch estimate x0, or the last deterministic estimate d",
            choices=("z", "x0", "d"),
            search=("z", "x0", "d"),
        ),
        Param(
            "det_input_scaling",
            str,
            "none",
            "deterministic-branch input: z unscaled (the code) or scaled by sqrt(abar)",
            choices=("none", "sqrt_abar"),
        ),
        Param("deterministic_prior", Prior, None, "prior of the deterministic branch (None: the same)", optional=True),
        Param("init", str, "auto", "initialisation of z", choices=_INITS, search=("auto", "start", "pinv")),
        Param("sf", int, None, "SR factor of the sigma' schedule end (None: inferred)", low=1, optional=True),
        Param(
            "red_weight",
            str,
            "constant",
            "RED weight mu: constant lambda (1 - tau) sigma_y^2 (paper) or times (sigma'_0 / sigma'_k)^2 (sigma)",
            choices=("constant", "sigma"),
            search=("constant", "sigma"),
        ),
        Param(
            "truncate",
            str,
            "all",
            "prior range below sigma_t0: skip whole iterations (all) or only the stochastic branch's (stochastic)",
            choices=("all", "stochastic"),
            search=("all", "stochastic"),
        ),
        Param(
            "texture",
            float,
            0.0,
            "std of the output's antithetic noise probe, in units of its denoiser level (0: none; pd)",
            low=0.0,
            high=4.0,
        ),
        Param(
            "data_step",
            str,
            "auto",
            "gradient (paper), prox (exact minimiser), auto (prox for noiseless samples)",
            choices=("auto", "gradient", "prox"),
            search=("auto", "prox"),
        ),
    )
    presets = {
        "sr": Preset(
            "RDMD official code defaults (rdmd_sr.py): FFHQ/ImageNet SR x4, sigma_y 0.05",
            {"lambda_": 20.0, "tau": 0.5, "zeta": 0.0, "steps": 100, "output": "z", "init": "bicubic"},
        ),
        "deblur": Preset(
            "RDMD official code defaults (rdmd_deblur.py): FFHQ/ImageNet Gaussian/motion deblur, sigma_y 0.05",
            {"lambda_": 20.0, "tau": 0.5, "zeta": 0.3, "steps": 100, "output": "x0", "init": "y"},
        ),
        "denoiser": Preset(
            "zsir's variant for Gaussian-denoiser priors (the built-in prior, FFDNet), not the paper's: exact data "
            "step, RED weight grown like PnP's, deterministic iterations kept under truncation, output d; tau 0 "
            "(pd adds texture), measured in BENCHMARKS.md",
            {
                "lambda_": 5.0,
                "tau": 0.0,
                "steps": 30,
                "output": "d",
                "data_step": "prox",
                "red_weight": "sigma",
                "truncate": "stochastic",
            },
        ),
    }

    def __init__(self, prior: Prior, *, steps: int | None = None, progress: bool = True, **hyperparameters):
        super().__init__(prior, steps=steps, progress=progress, **hyperparameters)
        self._abar = prior_alphas_cumprod(prior)
        self._sig = units.sigma_from_abar(self._abar)
        self._t = rdmd_timesteps(self.steps, self._abar)
        self._start = truncate_to_prior(self._sig[self._t], prior.sigma_max)

    # ----- NFE ------------------------------------------------------------------------------------------------
    def _first(self, det_used: bool) -> int:
        """First iteration run: the truncated start ``k0``, or 0 with ``truncate="stochastic"`` (deterministic
        branch and data step from the first iteration on, the stochastic branch from ``k0``)."""
        return 0 if self.params["truncate"] == "stochastic" and det_used else self._start

    def _calls(self, det_used: bool) -> int:
        N, k0, p = self.steps, self._start, self.params
        det = (N - 1 - self._first(det_used)) if det_used else 0
        sto = (N - 1 - k0) if p["tau"] > 0.0 else 0
        return det + sto + int(p["output"] != "z") + (2 if p["texture"] > 0.0 else 0)

    def total_nfe(self) -> int:
        """``2N - 2`` (``output="z"``) or ``2N - 1`` (``"x0"``, ``"d"``) for ``0 < tau < 1`` and ``sigma_y > 0``,
        plus 2 with ``texture > 0``."""
        return self._calls(det_used=self.params["tau"] < 1.0)

    @classmethod
    def pd_params(cls, pd: float) -> dict:
        """``texture = 2 pd`` (the zero-mean probe at the output's denoiser; see the module docstring)."""
        return {"texture": 2.0 * pd}

    # ----- pieces ---------------------------------------------------------------------------------------------
    def _initial_z(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, x_shape, sf: int) -> Tensor:
        mode = self.params["init"]
        same = tuple(y.shape) == tuple(x_shape)
        if mode == "auto":
            observed = not bool(unobserved_mask(operator, (1, *x_shape[1:]), device=y.device, dtype=y.dtype).any())
            mode = "bicubic" if scale_factor(y.shape, x_shape) > 1 else ("y" if same and observed else "start")
        if mode == "bicubic":
            if scale_factor(y.shape, x_shape) == 1:
                raise ValueError(f"init: 'bicubic' needs y to be a down-scaled image, got y {tuple(y.shape)}")
            return F.interpolate(y, size=tuple(x_shape[-2:]), mode="bicubic", align_corners=False)
        if mode == "y":
            if not same:
                raise ValueError(f"init: 'y' needs y shaped like the image {tuple(x_shape)}, got {tuple(y.shape)}")
            return y.clone()
        if mode == "start":
            return informative_start(y, operator, sigma_y)
        return operator.pinv(y, sigma_y**2)

    def _det_levels(self, sigma_img: Tensor, sf: int, det_prior: Prior) -> tuple[Tensor, Tensor, Tensor]:
        """Per-iteration, per-sample ``(N, B)`` level (model units), input scale and RED-weight factor of the
        deterministic branch (the factor is 1, or ``(sigma'_0 / sigma'_k)^2`` for ``red_weight="sigma"``)."""
        N = self.steps
        s = units.sigma_to_model(np.stack([_det_sigmas(N, float(v), sf) for v in sigma_img.flatten()], 1))
        if det_prior.alphas_cumprod is not None:
            abar = prior_alphas_cumprod(det_prior)
            table = units.sigma_from_abar(abar)
            t = units.timestep_from_sigma(s.reshape(-1), table).reshape(s.shape)
            level = table[t]
            scale = units.vp_to_ve(1.0, abar[t]) if self.params["det_input_scaling"] == "none" else np.ones_like(level)
        else:
            level, scale = s, np.ones_like(s)
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)).to(sigma_img)  # noqa: E731
        red = (s[:1] / s) ** 2 if self.params["red_weight"] == "sigma" else np.ones_like(s)
        return as_t(level), as_t(scale), as_t(red)

    def _prox_mask(self, sigma_img: Tensor) -> Tensor | None:
        """Per-sample ``(B, 1, 1, 1)`` choice of the exact data step (``None``: the gradient step for all)."""
        mode = self.params["data_step"]
        noiseless = sigma_img == 0
        if mode == "gradient":
            if bool(noiseless.any()) and float(self.params["tau"]) > 0.0:
                warnings.warn(
                    "RDMD with data_step='gradient' on a noiseless measurement: the prior weight rho = lambda tau "
                    "(1e-3)^2 / sigma_t^2 is about 1e-5 / sigma_t^2, so the pixels A does not observe barely move "
                    "from the initialisation; data_step='auto' (the default) uses the exact data step there",
                    stacklevel=4,
                )
            return None
        mask = torch.ones_like(noiseless) if mode == "prox" else noiseless
        return mask if bool(mask.any()) else None

    # ----- the loop -------------------------------------------------------------------------------------------
    def run(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, generator) -> Tensor:
        p = self.params
        lam, tau, zeta = p["lambda_"], p["tau"], p["zeta"]
        x_shape = operator.x_shape(tuple(y.shape))
        sf = p["sf"] if p["sf"] is not None else scale_factor(y.shape, x_shape)
        sigma_img = units.sigma_to_image(sigma_y)
        det_prior = p["deterministic_prior"] or self.prior
        mu, _, _ = rdmd_weights(lam, tau, sigma_img, 1.0)
        det_used = bool((mu > 0).any())
        sto_used = tau > 0.0
        if not (det_used or sto_used):
            warnings.warn(
                "RDMD with tau = 0 (pd = 0) and sigma_y = 0 has no prior term (mu = lambda (1 - tau) sigma_y^2 = 0 and "
                "rho = 0): it only runs gradient steps on ||A z - y||^2 and never calls the prior; use tau > 0 for "
                "noiseless measurements",
                stacklevel=3,
            )
        prox = self._prox_mask(sigma_img)
        if self._bar is not None:
            self._bar.total = self._calls(det_used)
        last_det = p["output"] == "d" or p["texture"] > 0.0  # a final deterministic-branch call
        if det_used or last_det:
            det_level, det_scale, red = self._det_levels(sigma_img, sf, det_prior)

        N, k0 = self.steps, self._start
        sig = [float(self._sig[t]) for t in self._t]
        z = self._initial_z(y, operator, sigma_y, x_shape, sf)
        x = None  # the diffusion state: from iteration k0 on
        for k in range(self._first(det_used), N - 1):
            if k == k0:
                x = z + sig[k] * randn(z.shape, generator, z)
            d = self.denoise(z * det_scale[k].view(-1, 1, 1, 1), det_level[k], prior=det_prior) if det_used else z
            sto = sto_used and x is not None
            x_hat = self.denoise(x, sig[k]) if sto else z
            rho = rdmd_weights(lam, tau, sigma_img, sig[k])[1] if sto else 0.0  # no diffusion state before k0
            mu_k = mu * red[k].view(-1, 1, 1, 1) if det_used else mu
            step = 1.0 / (1.0 + mu_k + rho)
            # z - step (g + mu (z - d) + rho (z - x_hat)) == step (z - g + mu d + rho x_hat), accumulated in place
            z_new = z - ls_gradient(z, y, operator)
            z_new.add_(mu_k * d).add_(rho * x_hat).mul_(step)
            if prox is not None:
                w = mu_k + rho  # zero only without a prior term (tau = 0, noiseless): keep the gradient step there
                safe = w.clamp_min(torch.finfo(z.dtype).tiny)
                exact = operator.prox_l2((mu_k * d + rho * x_hat) / safe, y, 1.0 / safe)
                z_new = torch.where(prox & (w > 0), exact, z_new)
                del exact
            del d, x_hat, z  # before the re-noising: two image-sized tensors fewer at its peak
            if x is not None:
                eps = noise_estimate(x, z_new, sig[k])
                del x
                x = renoise(z_new, eps, sig[k + 1], zeta, generator)
                del eps
            z = z_new
        out = z
        if p["output"] == "x0":
            x = z + sig[k0] * randn(z.shape, generator, z) if x is None else x  # k0 = N - 1: no iteration ran
            out = self.denoise(x, sig[N - 1])
        if last_det:  # the deterministic branch at its last level
            level, v = det_level[N - 1], z * det_scale[N - 1].view(-1, 1, 1, 1)
            probe = lambda u: self.denoise(u, level, prior=det_prior)  # noqa: E731
            if p["output"] == "d":
                out = probe(v)
            if p["texture"] > 0.0:
                out = out + texture_probe(probe, v, level.view(-1, 1, 1, 1), p["texture"], generator)
        return out
