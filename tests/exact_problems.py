"""Exact restoration problems for sampler tests: a Gaussian image prior, a linear operator, the exact posterior.

Used by the sampler tests (``from exact_problems import gaussian_problem``; pytest puts tests/ on sys.path).
Everything is returned in **model units** ([-1, 1] images, model-unit sigma), the convention samplers run in.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor

from zsir import operators
from zsir.priors.exact import GaussianImagePrior
from zsir.units import as_sigma

__all__ = ["gaussian_problem", "relative_error", "posterior_mean_error", "KINDS"]

KINDS = ("blur", "inpaint", "identity")


def _operator(kind: str, shape: tuple[int, int, int], generator: torch.Generator):
    """A 3x3 circular blur, a random half-pixel mask or the identity."""
    _, H, W = shape
    if kind == "blur":
        kernel = torch.tensor([[0.0, 0.15, 0.0], [0.15, 0.4, 0.15], [0.0, 0.15, 0.0]], dtype=torch.float64)
        return operators.CircularBlur(kernel)
    if kind == "inpaint":
        mask = (torch.rand((1, 1, H, W), generator=generator, dtype=torch.float64) > 0.5).to(torch.float64)
        return operators.Inpainting(mask)
    if kind == "identity":
        return operators.Identity()
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


def gaussian_problem(
    kind: str = "blur",
    sigma_y: float | list[float] = 0.1,
    size: int = 16,
    channels: int = 1,
    batch: int = 1,
    seed: int = 0,
    alpha: float = 2.0,
    scale: float = 0.5,
    dtype: torch.dtype = torch.float64,
) -> SimpleNamespace:
    """A stationary Gaussian image prior, an operator, a ground truth drawn from the prior and its measurement.

    Args:
        kind: ``"blur"`` (3x3 circular blur), ``"inpaint"`` (half the pixels missing) or ``"identity"``.
        sigma_y: measurement noise std in **model units** (a float or one value per sample).
        alpha, scale: the prior's spectral decay and amplitude (``GaussianImagePrior(shape, alpha, scale)``).

    Returns:
        a namespace with ``prior``, ``operator``, ``x_star`` (B, C, H, W), ``y`` (model units), ``sigma``
        ``(B, 1, 1, 1)`` (model units) and ``post_mean``, the exact posterior mean ``E[x | y]``.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (channels, size, size)
    prior = GaussianImagePrior(shape, alpha=alpha, scale=scale).to(dtype=dtype)
    operator = _operator(kind, shape, g)
    x_star = prior.sample(batch, generator=g, dtype=dtype)
    sigma = as_sigma(sigma_y, batch, dtype=dtype, name="sigma_y")
    clean = operator.A(x_star)
    y = clean + sigma * torch.randn(clean.shape, generator=g, dtype=dtype)
    post_mean = prior.posterior_mean(y, operator, sigma)
    return SimpleNamespace(prior=prior, operator=operator, x_star=x_star, y=y, sigma=sigma, post_mean=post_mean)


def relative_error(estimate: Tensor, reference: Tensor) -> float:
    """``||estimate - reference|| / ||reference||`` over the whole batch."""
    return float((estimate - reference).norm() / reference.norm())


def posterior_mean_error(samples: Tensor, post_mean: Tensor) -> float:
    """Relative error of the average of ``samples`` ``(K, B, C, H, W)`` to the exact posterior mean."""
    return relative_error(samples.mean(0), post_mean)
