r"""Update steps shared by the samplers: re-noising, noise injection and data-consistency steps.

Every state is **variance exploding** in [-1, 1] model units: ``x = x0 + sigma * eps``. (A VP state
``sqrt(abar) x0 + sqrt(1 - abar) eps`` is the VE state times ``sqrt(abar)``, so the DDIM / DiffPIR formulas
below are the VP formulas divided by ``sqrt(abar_next)``.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from zsir.operators.base import LinearOperator
from zsir.samplers.base import randn

__all__ = [
    "noise_estimate",
    "renoise",
    "inject_noise",
    "renoise_or_inject",
    "back_project",
    "ls_gradient",
    "initial_state",
]


def noise_estimate(x: Tensor, x0: Tensor, sigma: float | Tensor) -> Tensor:
    r"""Effective noise of a VE state: ``eps_hat = (x - x0) / sigma``."""
    return (x - x0) / sigma


def renoise(
    x0: Tensor, eps: Tensor, sigma_next: float | Tensor, zeta: float | Tensor, generator: torch.Generator | None
) -> Tensor:
    r"""DDIM / DiffPIR re-noising to level ``sigma_next``:

    .. math:: x_{next} = x_0 + \sigma_{next} (\sqrt{1 - \zeta}\, \hat\epsilon + \sqrt{\zeta}\, n),\quad n \sim N(0, I)

    ``zeta = 0`` is deterministic DDIM; ``zeta = 1`` is fresh noise.
    """
    zeta_t = torch.as_tensor(zeta, dtype=x0.dtype, device=x0.device)
    s = torch.as_tensor(sigma_next, dtype=x0.dtype, device=x0.device)
    out = torch.addcmul(x0, s * torch.sqrt(1.0 - zeta_t), eps)  # two fused passes over the image, not six
    if bool((zeta_t > 0).any()):
        out.addcmul_(s * torch.sqrt(zeta_t), randn(x0.shape, generator, x0))
    return out


def inject_noise(
    x0: Tensor, z_hat_minus: Tensor, sigma_next: float | Tensor, eta: float, generator: torch.Generator | None
) -> Tensor:
    r"""CM4IR noise injection (cm4ir.md 1.4) to level ``sigma_next``:

    .. math:: x_{next} = x_0 + \sigma_{next} (\eta\, z + \sqrt{1 - \eta^2}\, \hat z^-),\quad z \sim N(0, I)

    where ``z_hat_minus = (x0_pre - x) / sigma`` is the **negated** noise estimate (DDIM would use ``+eps_hat``).
    """
    return x0 + sigma_next * (eta * randn(x0.shape, generator, x0) + math.sqrt(max(1.0 - eta * eta, 0.0)) * z_hat_minus)


def renoise_or_inject(
    x0: Tensor,
    eps: Tensor,
    sigma_next: float | Tensor,
    zeta: float | Tensor,
    generator: torch.Generator | None,
    eta_ni: float | None = None,
) -> Tensor:
    r"""The next state of a DDIM-type sampler: :func:`renoise` ``(x0, eps, sigma_next, zeta)`` or, with ``eta_ni``
    set, CM4IR's :func:`inject_noise` ``(x0, -eps, sigma_next, eta_ni)`` (the "and beyond" port of cm4ir.md 4: the
    re-injected estimated noise is **reversed** and mixed with fresh noise by a variance-preserving rotation).
    """
    if eta_ni is None:
        return renoise(x0, eps, sigma_next, zeta, generator)
    return inject_noise(x0, -eps, sigma_next, eta_ni, generator)


def back_project(
    x0: Tensor, y: Tensor, operator: LinearOperator, eta_reg: float | Tensor = 0.0, mu: float = 1.0
) -> Tensor:
    r"""Back-projection ``x0 - mu A^T (A A^T + eta_reg I)^{-1} (A x0 - y)``.

    With ``mu = 1`` and ``eta_reg = 0`` it is the projection onto ``{x : A x = y}`` (DDNM's range-null-space
    step). ``eta_reg`` is in squared model units of y.
    """
    return x0 - mu * operator.pinv(operator.A(x0) - y, eta_reg)


def ls_gradient(x: Tensor, y: Tensor, operator: LinearOperator) -> Tensor:
    r"""Gradient of ``1/2 ||A x - y||^2``: ``A^T (A x - y)``."""
    return operator.At(operator.A(x) - y)


def initial_state(
    y: Tensor,
    operator: LinearOperator,
    sigma: float,
    generator: torch.Generator | None,
    informative: bool,
    eta_reg: float | Tensor = 0.0,
) -> Tensor:
    r"""Start state ``x = x_init + sigma n`` (VE, model units) of a sampler whose first level is ``sigma``.

    ``x_init = A^T (A A^T + eta_reg I)^{-1} y`` when ``informative`` (a schedule truncated to a prior's
    ``sigma_max``), else 0: the pure-noise start of a full diffusion schedule (the VP ``x_T ~ N(0, I)``). Samplers
    pass ``eta_reg = sigma_y^2`` (model units, per sample): the exact pseudo-inverse of an ill-conditioned blur
    would amplify the measurement noise without bound (5 dB starts on Gaussian deblurring).
    """
    x_shape = operator.x_shape(tuple(y.shape))
    x_init = operator.pinv(y, eta_reg) if informative else torch.zeros(x_shape, device=y.device, dtype=y.dtype)
    return x_init + sigma * randn(x_shape, generator, y)
