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

**Noise injection** (``noise_injection=True``; docs/samplers/cm4ir.md, a reconstruction: no published code): on the
coefficients where DDRM re-uses the prior's noise estimate (the first case), DDIM's ``+c_eps`` is replaced by
CM4IR's reversed estimate, ``c0 + sigma' (eta_ni n + sqrt(1 - eta_ni^2) (-c_eps))``; the observed coefficients keep
DDRM's y-based updates.

**Start truncation.** A prior whose ``sigma_max`` is below the first level starts at the first level it covers
(:func:`~zsir.samplers.schedules.truncate_to_prior`) from the informative ``x = A^+ y + sigma n`` instead of pure
noise.

**Perception-distortion knob:** ``eta_b = 1 - pd`` (``pd = 0``: the paper's ``eta_b = 1``, the coefficients noisier
than ``y`` follow the measurement; ``pd = 1``: they follow the prior's estimate plus fresh noise until the state is
less noisy than ``y``). ``eta`` keeps its value (the paper's 0.85, or a tuned preset's). Measured (MSE to the exact
posterior mean, ``tests/test_baselines.py``; PSNR on held-out CBSD68 crops, ``benchmarks/pd.py``), the distortion
grows monotonically as ``eta_b`` falls, on blur, SR and inpainting; ``eta``, the knob before, moved it one way on
blur and the other way on inpainting.

DDRM needs a singular basis: an :class:`~zsir.operators.SVDOperator` (closed-form SVD) or a
:class:`~zsir.operators.CircularBlur`, whose SVD is the unitary DFT (:class:`FourierSVD`: complex coefficients,
``s = |K|``); other operators raise TypeError (use DDNM, DiffPIR, DPS or PnP for function operators).
"""

from __future__ import annotations

import torch
from torch import Tensor

from zsir.operators.base import LinearOperator, SVDOperator
from zsir.samplers.base import DiffusionSampler, Preset, randn, register_sampler
from zsir.samplers.params import NOISE_INJECTION, Param, Schema
from zsir.samplers.steps import initial_state, noise_estimate, renoise_or_inject

__all__ = ["DDRM", "FourierSVD", "require_svd"]


class FourierSVD:
    r"""The SVD of a :class:`~zsir.operators.CircularBlur` in the unitary 2-D DFT ``F`` (per channel).

    A circular convolution is ``A = F^H diag(K) F``; with ``K = |K| e^{i phi}`` that is ``A = U diag(|K|) V^H``
    with ``V = F^H`` and ``U = F^H diag(e^{i phi})``, both unitary: a valid singular basis with **complex**
    coefficients ``c = F x`` (Hermitian-symmetric for real images). Every DDRM update is a per-coefficient linear
    map with real, frequency-symmetric weights, so the state stays Hermitian and ``V c`` real; fresh noise is
    drawn as white image noise and transformed (:meth:`noise`), so it has the distribution of ``F n``.
    """

    def __init__(self, op: LinearOperator):
        self.op = op

    def _K(self, t: Tensor) -> Tensor:
        real = torch.float64 if t.dtype in (torch.float64, torch.complex128) else torch.float32
        return self.op.spectrum(t.shape[-2], t.shape[-1], t.device, real)

    def Vt(self, x: Tensor) -> Tensor:
        return torch.fft.fft2(x, norm="ortho")

    def V(self, c: Tensor) -> Tensor:
        return torch.fft.ifft2(c, norm="ortho").real

    def Ut(self, y: Tensor) -> Tensor:
        K = self._K(y)
        phase = torch.where(K.abs() > 0, K / torch.where(K.abs() > 0, K.abs(), 1.0), 0)
        return phase.conj() * torch.fft.fft2(y, norm="ortho")

    def singulars(self, x_shape, *, device=None, dtype=torch.float32) -> Tensor:
        return self.op.spectrum(x_shape[-2], x_shape[-1], device, dtype).abs().to(dtype)

    def noise(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        """``F n`` for white ``n ~ N(0, I)`` shaped like the image."""
        return self.Vt(randn(like.shape, generator, like.real))


def require_svd(operator: LinearOperator, sampler: str) -> SVDOperator | FourierSVD:
    """``operator`` if it is an :class:`SVDOperator`, its :class:`FourierSVD` for a ``CircularBlur``, else raise a
    TypeError naming the alternatives."""
    from zsir.operators import CircularBlur

    if isinstance(operator, CircularBlur):
        return FourierSVD(operator)
    if not isinstance(operator, SVDOperator):
        raise TypeError(
            f"operator: {sampler} works in the spectral space of A and needs an SVDOperator (closed-form SVD) or a "
            f"CircularBlur (the Fourier basis), got "
            f"{type(operator).__name__}; for FFT or function operators use 'ddnm', 'diffpir', 'dps', 'pnp', 'rdmd' "
            f"or 'cm4ir'"
        )
    return operator


@register_sampler("ddrm")
class DDRM(DiffusionSampler):
    """DDRM sampler (see the module docstring for the update equations, units and the pd mapping).

    Hyperparameters: :attr:`schema` (paper symbols).
    """

    state_images = 16  # measured: 15.5 to 17.1 images incl. y (tests/test_memory.py)

    name = "ddrm"
    default_steps = 20
    schema = Schema(
        Param(
            "eta",
            float,
            0.85,
            "fresh-noise share of the unobserved and less-noisy coefficients (eta_A = eta_C)",
            low=0.0,
            high=1.0,
            search=(0.0, 1.0),
        ),
        Param(
            "eta_b",
            float,
            1.0,
            "weight of y_bar on the coefficients noisier than y (eta_B)",
            low=0.0,
            high=1.0,
            search=(0.0, 1.0),
        ),
        *NOISE_INJECTION,
    )
    presets = {
        "paper": Preset(
            "DDRM (Kawar et al. 2022) README / paper default: 20 steps, uniform skip, eta 0.85, eta_b 1",
            {"steps": 20, "eta": 0.85, "eta_b": 1.0},
        ),
    }

    @classmethod
    def pd_params(cls, pd: float) -> dict:
        """``eta_b = 1 - pd``."""
        return {"eta_b": 1.0 - pd}

    def run(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, generator) -> Tensor:
        op = require_svd(operator, "DDRM")
        eta, eta_b = self.params["eta"], self.params["eta_b"]
        eta_ni = self.params["eta_ni"] if self.params["noise_injection"] else None
        k0, levels = self.start, self.levels
        x = initial_state(y, operator, levels[k0], generator, informative=k0 > 0, sigma_y=sigma_y)
        c_y = op.Ut(y)
        s = op.singulars(tuple(x.shape), device=x.device, dtype=x.dtype)
        observed = s > 0
        s_safe = torch.where(observed, s, torch.ones_like(s))
        y_bar = c_y / s_safe
        sy_safe = sigma_y.clamp_min(torch.finfo(x.dtype).tiny)
        draw = (lambda: op.noise(x, generator)) if isinstance(op, FourierSVD) else None
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
            c_next = renoise_or_inject(c0, eps, sigma_next, eta * eta, generator, draw=draw)
            if eta_ni is not None:
                injected = renoise_or_inject(c0, c_eps, sigma_next, 0.0, generator, eta_ni, draw)
                c_next = torch.where(free, injected, c_next)
            std_b = (sigma_next**2 - (eta_b * sigma_y / s_safe) ** 2).clamp_min(0.0).sqrt()
            fresh = randn(c0.shape, generator, c0) if draw is None else draw()
            c_before = eta_b * y_bar + (1.0 - eta_b) * c0 + std_b * fresh
            c_x = torch.where(before, c_before, c_next)
            x = op.V(c_x)
        return x
