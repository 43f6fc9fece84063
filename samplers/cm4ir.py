r"""CM4IR: zero-shot image restoration with few-step guidance of consistency models (and beyond).

T. Garber, T. Tirer, *Zero-Shot Image Restoration Using Few-Step Guidance of Consistency Models (and Beyond)*,
CVPR 2025, arXiv:2412.20596. Written from the paper and the maths (docs/samplers/cm4ir.md), not from the
unlicensed official code.

Everything is VE in [-1, 1] model units; ``sigma_y`` is the model-unit noise std (twice the [0, 1] value, as
the official code doubles it). With ``tau_N > ... > tau_1`` from :func:`~zsir.samplers.schedules.cm4ir_taus`
(``iN``, ``gamma``) and ``eta_reg = zeta sigma_y^2``:

.. math::

    x_{init} &= A^T (A A^T + \eta_{reg} I)^{-1} y \quad(+\text{median fill of unobserved pixels})
        ,\qquad x_N = x_{init} + \tau_N z\\
    \hat x_0 &= \mathrm{clamp}(f(x_k, (1 + \delta_k)\tau_k), -1, 1),\qquad
        \hat z^- = (\hat x_0 - x_k) / \tau_k\\
    x_{bp} &= \hat x_0 - \mu A^T (A A^T + \eta_{reg} I)^{-1} (A \hat x_0 - y)\\
    x_{k-1} &= x_{bp} + \tau_{k-1} (\eta z + \sqrt{1 - \eta^2}\, \hat z^-),\qquad z \sim N(0, I)

The last step returns ``x0_hat`` (no back-projection) for a **noisy** sample and ``x_bp`` (the exact projection
onto ``A x = y`` when ``zeta = 0``) for a **noiseless** one; the rule is applied per sample, so a batch may mix
both. One prior call per step: **NFE = N** (``steps``, default 4).

**Decoupled level delta.** ``deltas`` (one per step, noisiest first; a float means the same value at every
step) inflate the level the prior is told. For a consistency prior, ``injection_type = 0`` puts
``(1 + delta) tau`` only in the time embedding (the boundary scalings keep ``tau``: passed as
``scalings_sigma=tau``) and ``1`` puts it in both; an MMSE prior (diffusion model or denoiser: "and beyond") is
simply called at ``(1 + delta) tau`` for both types.

**Median fill** (docs/samplers/cm4ir.md): pixels the operator never observes (``A^T A 1 = 0``: inpainting holes) are
replaced by the per-channel nan-median of a ``(2r+1)^2`` window of the previous pass, ``r = 2, 3, ...``, until
no hole is left (``torch.nanmedian`` takes the lower median of an even count).

**Start truncation.** A prior whose ``sigma_max`` is below ``tau_N`` starts at the first level it covers
(:func:`~zsir.samplers.schedules.truncate_to_prior`) from ``x_init`` plus noise of that level (CM4IR always
starts from this informative point; the consistency models have ``sigma_max = 80``). That drops steps: FFDNet
(``sigma_max = 0.59``) keeps 2 of the default 4. ``truncation="fit"`` keeps all ``N`` steps instead and lowers
``iN`` to the largest value whose ``tau_N`` the prior covers (same ``gamma``; a zsir option, not in the paper).

**Regulariser schedule.** ``reg_schedule="constant"`` (the paper) back-projects with the same ``eta_reg`` at every
step; ``"tau"`` (a zsir option) uses ``eta_reg / tau_{k-1}^2`` at step ``k``, the Tikhonov weight of the
regularised projection of an estimate whose error has std ``tau_{k-1}`` (the next level): the measurements pull
hard while the estimate is rough and gently once it is close, so the last steps do not re-inject measurement noise
amplified by an ill-conditioned blur's weak frequencies (docs/samplers/cm4ir.md).

**Perception-distortion knob** (``pd`` in [0, 1]):

    ``eta = 0.1 + 0.8 pd``, ``delta_scale = 1 - pd``

``pd = 0`` is the published setting (``eta = 0.1``, tuned deltas: a mostly deterministic trajectory and a
denoiser told a larger noise level, i.e. smoother, lower-distortion estimates); raising ``pd`` moves the
re-injected noise towards fresh Gaussian noise and the denoiser towards the true level, i.e. a more stochastic,
sharper (more perceptual) sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zsir.operators.base import LinearOperator
from zsir.priors.base import Prior
from zsir.samplers.base import Preset, Sampler, randn, register_sampler
from zsir.samplers.params import Param, Schema
from zsir.samplers.schedules import cm4ir_taus, truncate_to_prior
from zsir.samplers.steps import MEDIAN_BUDGET, back_project, inject_noise, median_fill, unobserved_mask

__all__ = ["CM4IR", "median_fill", "unobserved_mask"]


def _row(dataset: str, task: str, sigma: float, i_n: int, gamma: float, zeta: float, deltas, inj: int | None):
    names = {"bedroom": "LSUN Bedroom", "cat": "LSUN Cat", "imagenet64": "ImageNet 64x64 (class-conditional)"}
    tasks = {
        "sr4": "SR x4 bicubic",
        "sr2": "SR x2 bicubic",
        "deblur": "Gaussian deblur",
        "inpaint80": "inpainting, 80% random pixels missing",
        "inpaintletters": "inpainting, lorem-ipsum letters mask",
    }
    note = "deltas uncommented as advised in issue #3" if deltas is not None else "no deltas"
    desc = f"CM4IR evaluate_CM4IR.sh: {names[dataset]}, {tasks[task]}, sigma_y {sigma} ({note})"
    params = {"steps": 4, "iN": i_n, "gamma": gamma, "zeta": zeta, "eta": 0.1, "mu": 1.0}
    params["deltas"] = list(deltas) if deltas is not None else 0.0
    params["injection_type"] = 0 if inj is None else inj
    return f"{dataset}-{task}-{sigma:g}", Preset(desc, params)


# docs/samplers/cm4ir.md, Presets: (dataset, task, sigma_y, iN, gamma, zeta, deltas, injection type)
_TABLE = [
    ("bedroom", "sr4", 0.025, 400, 0.7, 0.0, (0, 0.5, 0.1, 0), 0),
    ("bedroom", "deblur", 0.025, 75, 0.01, 3.0, (0.1, 0, 0, 0.05), 0),
    ("bedroom", "inpaint80", 0.025, 150, 0.2, 0.0, (0.1, 0.1, 0.8, 0.8), 1),
    ("bedroom", "inpaintletters", 0.025, 150, 0.2, 0.0, (0.2, 0.3, 0.8, 0.8), 1),
    ("bedroom", "sr4", 0.05, 250, 0.2, 0.0, (0, 0.3, 0.05, 0.1), 0),
    ("bedroom", "deblur", 0.05, 150, 0.05, 1.0, (0.1, 0, 0, 0.05), 0),
    ("bedroom", "inpaint80", 0.05, 150, 0.2, 0.0, (0.2, 0.3, 0.8, 0.8), 1),
    ("bedroom", "inpaint80", 0.0, 150, 0.2, 0.0, (0.2, 0.1, 1.0, 1.0), 1),
    ("cat", "sr4", 0.025, 400, 0.7, 0.0, (0, 0.3, 0, 0), 0),
    ("cat", "deblur", 0.025, 125, 0.05, 4.0, None, 0),
    ("cat", "inpaint80", 0.025, 150, 0.2, 0.0, (0, 0, 1.0, 1.0), 1),
    ("cat", "sr4", 0.05, 250, 0.2, 0.0, (0.1, 0.1, 0, 0), 0),
    ("cat", "deblur", 0.05, 250, 0.2, 1.0, None, 0),
    ("cat", "inpaint80", 0.05, 150, 0.2, 0.0, (0, 0, 1.0, 1.0), 1),
    ("imagenet64", "sr2", 0.01, 50, 0.01, 0.0, None, None),
    ("imagenet64", "sr2", 0.025, 75, 0.02, 0.0, None, None),
    ("imagenet64", "sr2", 0.05, 100, 0.03, 0.0, None, None),
]


@register_sampler("cm4ir")
class CM4IR(Sampler):
    """CM4IR sampler (see the module docstring for the update equations, units and the pd mapping).

    Hyperparameters: :attr:`schema`. ``iN`` and ``gamma`` default to the LSUN SR x4 sigma_y 0.05 setting (retune
    them for N != 4, docs/samplers/cm4ir.md). ``zeta`` defaults to 1, the official deblurring value at sigma_y = 0.05:
    without it the exact pseudo-inverse of an ill-conditioned blur amplifies the measurement noise without bound;
    the SR and inpainting presets set 0 as published, and noiseless measurements are unaffected since
    ``eta_reg = 0``.
    """

    work_bytes = 2 * 4 * MEDIAN_BUDGET  # the unfolded strip of median_fill and its median
    state_images = 8  # measured: 5.6 to 7.4 images incl. y (tests/test_memory.py)

    name = "cm4ir"
    default_steps = 4
    schema = Schema(
        Param("iN", int, 250, "schedule start index into the DDPM alpha-bar table", low=0, high=998, search=(20, 500)),
        Param(
            "gamma",
            float,
            0.2,
            "geometric growth of alpha-bar along the schedule",
            low=0.0,
            search=(0.005, 1.0),
            log=True,
        ),
        Param(
            "deltas",
            float,
            0.0,
            "decoupled denoiser levels (1 + delta) tau, one per step (noisiest first) or one for all",
            low=-1.0,
            low_open=True,
            per_step=True,
        ),
        Param("delta_scale", float, 1.0, "factor on the deltas (the pd knob)", low=0.0),
        Param(
            "injection_type", int, 0, "delta in the time embedding only (0) or also in the scalings (1)", choices=(0, 1)
        ),
        Param("eta", float, 0.1, "fresh-noise share of the injected noise", low=0.0, high=1.0, search=(0.0, 1.0)),
        Param(
            "zeta",
            float,
            1.0,
            "back-projection regulariser, eta_reg = zeta sigma_y^2",
            low=0.0,
            search=(0.01, 10.0),
            log=True,
        ),
        Param("mu", float, 1.0, "back-projection step (relaxed projection: 0 < mu < 2)", low=0.0, search=(0.25, 2.0)),
        Param(
            "median_fill",
            bool,
            True,
            "fill unobserved pixels of the initialisation by growing medians",
            search=(True, False),
        ),
        Param(
            "truncation",
            str,
            "drop",
            "prior sigma_max below tau_N: drop the steps above it, or fit iN so that tau_N <= sigma_max",
            choices=("drop", "fit"),
            search=("drop", "fit"),
        ),
        Param(
            "reg_schedule",
            str,
            "constant",
            "back-projection regulariser per step: constant zeta sigma_y^2, or zeta sigma_y^2 / tau_{k-1}^2",
            choices=("constant", "tau"),
            search=("constant", "tau"),
        ),
    )
    presets = dict(_row(*row) for row in _TABLE)

    def __init__(self, prior: Prior, *, steps: int | None = None, progress: bool = True, **hyperparameters):
        super().__init__(prior, steps=steps, progress=progress, **hyperparameters)
        p = self.params
        deltas = p["deltas"] if isinstance(p["deltas"], list) else [p["deltas"]] * self.steps
        if len(deltas) != self.steps:
            raise ValueError(
                f"deltas: expected {self.steps} values (one per step, steps={self.steps}), got {len(deltas)}: {deltas}"
            )
        self.deltas = [p["delta_scale"] * d for d in deltas]
        i_n = p["iN"]
        if p["truncation"] == "fit":  # the largest iN <= the given one whose first level the prior covers
            while i_n > 0 and cm4ir_taus(i_n, p["gamma"], self.steps)[0] > prior.sigma_max * (1.0 + 1e-6):
                i_n -= 1
        self.i_n = i_n
        self.taus = cm4ir_taus(i_n, p["gamma"], self.steps)
        self._start = truncate_to_prior(self.taus, prior.sigma_max)

    def total_nfe(self) -> int:
        """One prior call per step: ``N`` (fewer only under start truncation)."""
        return self.steps - self._start

    @classmethod
    def pd_params(cls, pd: float) -> dict:
        """``eta = 0.1 + 0.8 pd``, ``delta_scale = 1 - pd`` (pd = 0: the published setting)."""
        return {"eta": 0.1 + 0.8 * pd, "delta_scale": 1.0 - pd}

    def consistency(self, x: Tensor, tau: float, delta: float) -> Tensor:
        """One prior call at true level ``tau`` with the decoupled level ``(1 + delta) tau`` (model units)."""
        level = (1.0 + delta) * tau
        if self.prior.kind == "consistency" and self.params["injection_type"] == 0 and delta != 0.0:
            return self.denoise(x, level, scalings_sigma=tau)
        return self.denoise(x, level)

    def run(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, generator) -> Tensor:
        p = self.params
        eta, mu = p["eta"], p["mu"]
        eta_reg = p["zeta"] * sigma_y**2
        x = operator.pinv(y, eta_reg)
        if p["median_fill"]:
            x = median_fill(x, unobserved_mask(operator, (1, *x.shape[1:]), device=x.device, dtype=x.dtype))
        N, k0 = self.steps, self._start
        x = x + self.taus[k0] * randn(x.shape, generator, x)
        noisy = sigma_y > 0
        for k in range(k0, N - 1):
            tau = self.taus[k]
            x0 = self.consistency(x, tau, self.deltas[k]).clamp(-1.0, 1.0)
            z_hat_minus = (x0 - x).div_(tau)  # pre-back-projection estimate, true tau
            del x  # the state is not needed again: at most 5 image-sized tensors live at once (12 MP: 0.7 GB)
            reg = eta_reg / self.taus[k + 1] ** 2 if p["reg_schedule"] == "tau" else eta_reg
            x_bp = back_project(x0, y, operator, reg, mu)
            del x0
            x = inject_noise(x_bp, z_hat_minus, self.taus[k + 1], eta, generator)
            del x_bp, z_hat_minus
        x0 = self.consistency(x, self.taus[N - 1], self.deltas[N - 1]).clamp(-1.0, 1.0)
        if bool(noisy.all()):
            return x0
        return torch.where(noisy, x0, back_project(x0, y, operator, eta_reg, mu))
