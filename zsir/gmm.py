r"""The Gaussian-mixture benchmark kit: MCGdiff-style inverse problems with an exact posterior (docs/benchmarks/gmm.md).

:func:`mcgdiff_problem` rebuilds the MCGdiff GMM experiment (Cardoso et al., the authors' ``gmm.py`` /
``viz_gaussian.py`` setup): a 25-component mixture on a 5x5 grid with spacing 8, identity covariances, random
squared-normal weights, a random ``d_y x d_x`` operator with singular values ``sort(U(0,1))``, a random noise level
``sigma_y = u * max(s)``, and the exact posterior. :func:`sliced_wasserstein` is the metric (mean over 100 random
directions of the 1-D W1), and :func:`noise_floor` the SW between two independent exact sample sets, which must be
reported alongside every method (it is not 0).

**Units.** These problems live in their *own* units (the means are +-16 apart), not in [-1, 1] image units:
samplers run on them directly in model space, with ``prior.denoise(x, sigma)`` a VE denoiser in the same units,
``y`` of shape ``(1, d_y, 1, 1)``, ``x`` of shape ``(B, d_x, 1, 1)`` and ``sigma_y`` in problem units. Do not
pass them through :func:`zsir.solve` (which converts [0, 1] images to model units).

**Diffusion.** The prior carries the authors' descending-beta alpha-bar table
(:func:`~zsir.samplers.schedules.mcgdiff_alphas_cumprod`) as its ``alphas_cumprod``, so diffusion samplers walk its
levels, and :meth:`GMMProblem.timesteps` gives the operator-adapted grid the authors use for every method
(:func:`~zsir.samplers.schedules.mcgdiff_timesteps`), to pass as ``timesteps=`` to a
:class:`~zsir.samplers.DiffusionSampler`.

**Randomness.** Everything is drawn from one ``torch.Generator`` seeded with ``seed``, in the order of the
authors' code (weights, matrix, singular values, ``x*``, ``u``, noise), so a seed gives the same problem on every
machine. It is not bit-identical to the authors' problems (they used the global RNG and
``torch.distributions`` sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from zsir.operators.matrix import MatrixOperator
from zsir.priors.exact import GaussianMixturePrior
from zsir.samplers.schedules import mcgdiff_alphas_cumprod, mcgdiff_timesteps

__all__ = ["GMMProblem", "mcgdiff_means", "mcgdiff_problem", "sliced_wasserstein", "noise_floor"]


@dataclass
class GMMProblem:
    """One MCGdiff GMM inverse problem ``y = A x* + sigma_y eps`` (problem units, see module docstring).

    Attributes:
        prior: the 25-component :class:`~zsir.priors.exact.GaussianMixturePrior`, shape ``(d_x, 1, 1)``.
        operator: :class:`~zsir.operators.MatrixOperator` with the ``(d_y, d_x)`` matrix ``A``.
        sigma_y: observation noise std, a 0-dim float64 tensor (``float(sigma_y)``, ``sigma_y.expand(B, 1, 1, 1)``).
        x_star: the ground truth ``(1, d_x, 1, 1)``.
        y: the measurement ``(1, d_y, 1, 1)``.
        posterior: the exact posterior ``p(x | y)`` (a mixture with full covariances).
        seed: the seed the problem was drawn with.
    """

    prior: GaussianMixturePrior
    operator: MatrixOperator
    sigma_y: Tensor
    x_star: Tensor
    y: Tensor
    posterior: GaussianMixturePrior
    seed: int
    singular_values: Tensor

    def timesteps(self, steps: int) -> list[int]:
        """The MCGdiff operator-adapted grid of ``steps`` timesteps (noisiest first) of ``prior.alphas_cumprod``."""
        return mcgdiff_timesteps(
            self.prior.alphas_cumprod.numpy(), self.singular_values.numpy(), float(self.sigma_y), steps
        )


def mcgdiff_means(d_x: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The 25 means ``(-8 i, -8 j)`` for ``i, j in -2..2`` (i outer), each 2-D point repeated ``d_x / 2`` times."""
    if d_x < 2 or d_x % 2:
        raise ValueError(f"d_x: expected an even dimension >= 2, got {d_x}")
    grid = [[-8.0 * i, -8.0 * j] * (d_x // 2) for i in range(-2, 3) for j in range(-2, 3)]
    return torch.tensor(grid, dtype=dtype)


def mcgdiff_problem(d_x: int, d_y: int, seed: int, dtype: torch.dtype = torch.float64) -> GMMProblem:
    """Draw the MCGdiff GMM problem for ``(d_x, d_y)`` from a generator seeded with ``seed`` (docs/benchmarks/gmm.md).

    Prior: 25 components, means :func:`mcgdiff_means`, identity covariances, weights ``z^2 / sum z^2`` with
    ``z ~ N(0, I_25)``. Operator: ``A0 = randn(d_y, d_x) = U S V^T``, ``A = U diag(sort(rand(d_y), desc)) V[:d_y]``.
    Noise: ``sigma_y = u * max(s)``, ``u ~ U(0, 1)``; ``x* ~ prior``; ``y = A x* + sigma_y eps``.
    The prior and posterior compute in float64; ``dtype`` is the dtype of ``x_star`` and ``y``.
    The paper's grid is ``d_x in {8, 80, 800}``, ``d_y in {1, 2, 4}``, 20 seeds each.
    """
    if not 1 <= d_y <= d_x:
        raise ValueError(f"d_y: expected 1 <= d_y <= d_x = {d_x}, got {d_y}")
    g = torch.Generator().manual_seed(int(seed))
    f64 = torch.float64
    means = mcgdiff_means(d_x)
    z = torch.randn(25, generator=g, dtype=f64)
    prior = GaussianMixturePrior(means, z**2 / (z**2).sum(), covs=1.0, shape=(d_x, 1, 1))
    prior.alphas_cumprod = torch.from_numpy(mcgdiff_alphas_cumprod())
    a0 = torch.randn(d_y, d_x, generator=g, dtype=f64)
    u, _, vh = torch.linalg.svd(a0, full_matrices=True)
    s = torch.sort(torch.rand(d_y, generator=g, dtype=f64), descending=True).values
    matrix = u @ torch.diag(s) @ vh[:d_y]
    operator = MatrixOperator(matrix, (d_x, 1, 1))
    x_star = prior.sample(1, g)
    sigma_y = float(torch.rand(1, generator=g, dtype=f64)) * float(s.max())
    y = operator.A(x_star) + sigma_y * torch.randn(1, d_y, 1, 1, generator=g, dtype=f64)
    posterior = prior.posterior(matrix, y.reshape(d_y), sigma_y)
    sigma = torch.tensor(sigma_y, dtype=f64)
    return GMMProblem(prior, operator, sigma, x_star.to(dtype), y.to(dtype), posterior, int(seed), s)


def sliced_wasserstein(a: Tensor, b: Tensor, num_slices: int = 100, generator: torch.Generator | None = None) -> float:
    r"""Mean sliced Wasserstein-1 distance between two sample sets (MCGdiff's metric, docs/benchmarks/gmm.md).

    ``SW = mean_theta W1(a theta, b theta)`` over ``num_slices`` directions ``theta ~ N(0, I)`` normalised to unit
    length. The 1-D W1 is exact for any sample sizes: ``int |F_a(t) - F_b(t)| dt`` over the merged support (for
    equal sizes this is ``mean |sort(a theta) - sort(b theta)|``), as ``scipy.stats.wasserstein_distance``.

    Args:
        a, b: ``(n, ...)`` and ``(m, ...)`` samples with the same number of features (flattened).
        num_slices: number of random directions.
        generator: draws the directions (on CPU); ``None`` uses the global RNG.
    """
    a = a.detach().reshape(a.shape[0], -1).to("cpu", torch.float64)
    b = b.detach().reshape(b.shape[0], -1).to("cpu", torch.float64)
    if a.shape[1] != b.shape[1] or a.shape[0] < 1 or b.shape[0] < 1:
        raise ValueError(f"a, b: expected non-empty sample sets with the same dimension, got {a.shape} and {b.shape}")
    if int(num_slices) < 1:
        raise ValueError(f"num_slices: expected a positive int, got {num_slices}")
    theta = torch.randn(a.shape[1], int(num_slices), generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, pb = (a @ theta).T, (b @ theta).T  # (S, n), (S, m)
    pa, pb = pa.sort(dim=1).values, pb.sort(dim=1).values
    allv = torch.cat([pa, pb], dim=1).sort(dim=1).values  # (S, n + m)
    deltas = allv[:, 1:] - allv[:, :-1]
    knots = allv[:, :-1].contiguous()
    cdf_a = torch.searchsorted(pa.contiguous(), knots, right=True).to(torch.float64) / pa.shape[1]
    cdf_b = torch.searchsorted(pb.contiguous(), knots, right=True).to(torch.float64) / pb.shape[1]
    return float(((cdf_a - cdf_b).abs() * deltas).sum(dim=1).mean())


def noise_floor(
    posterior: GaussianMixturePrior, n: int = 2000, num_slices: int = 100, generator: torch.Generator | None = None
) -> float:
    """SW between two independent sets of ``n`` exact samples of ``posterior``: the best score a perfect sampler
    can expect at this sample size (report it next to every method, docs/benchmarks/gmm.md)."""
    return sliced_wasserstein(posterior.sample(n, generator), posterior.sample(n, generator), num_slices, generator)
