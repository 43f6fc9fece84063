"""The Gaussian-mixture benchmark kit (zsir/gmm.py): MCGdiff problems, sliced Wasserstein, noise floor."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import wasserstein_distance

from zsir import gmm
from zsir.operators import MatrixOperator
from zsir.priors.exact import GaussianMixturePrior


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("d_x, d_y", [(8, 1), (80, 4)])
def test_mcgdiff_problem_shapes_and_structure(d_x, d_y):
    pb = gmm.mcgdiff_problem(d_x, d_y, seed=3)
    assert isinstance(pb.prior, GaussianMixturePrior) and isinstance(pb.operator, MatrixOperator)
    assert pb.prior.K == 25 and pb.prior.shape == (d_x, 1, 1)
    assert pb.x_star.shape == (1, d_x, 1, 1) and pb.y.shape == (1, d_y, 1, 1)
    means = pb.prior.means
    assert means[0, :2].tolist() == [16.0, 16.0] and means[1, :2].tolist() == [16.0, 8.0]  # i outer, j inner
    assert float(means[12].abs().sum()) == 0.0
    assert torch.equal(means[:, 0::2], means[:, :1].expand(25, d_x // 2))  # the 2-D point is repeated
    assert sorted({float(v) for v in means[:, :2].flatten()}) == [-16.0, -8.0, 0.0, 8.0, 16.0]
    assert torch.equal(pb.prior.iso, torch.ones(25, dtype=torch.float64))
    s = pb.operator.s[:d_y]
    assert bool((s > 0).all() and (s < 1).all() and (s[:-1] >= s[1:]).all())
    assert 0.0 < float(pb.sigma_y) <= float(s.max())
    assert float(pb.posterior.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert pb.posterior.covs.shape == (25, d_x, d_x)
    # the posterior is the prior conditioned through the operator object too
    again = pb.prior.posterior(pb.operator, pb.y.reshape(d_y), pb.sigma_y)
    assert torch.allclose(again.means, pb.posterior.means, atol=1e-10)
    assert torch.allclose(again.weights, pb.posterior.weights, atol=1e-10)


def test_mcgdiff_problem_is_deterministic_per_seed():
    a, b, c = gmm.mcgdiff_problem(8, 2, 7), gmm.mcgdiff_problem(8, 2, 7), gmm.mcgdiff_problem(8, 2, 8)
    for name in ("x_star", "y", "sigma_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert torch.equal(a.operator.matrix, b.operator.matrix) and torch.equal(a.prior.weights, b.prior.weights)
    assert not torch.equal(a.operator.matrix, c.operator.matrix)
    assert gmm.mcgdiff_problem(8, 2, 7, dtype=torch.float32).y.dtype == torch.float32
    with pytest.raises(ValueError, match="d_x"):
        gmm.mcgdiff_problem(7, 2, 0)
    with pytest.raises(ValueError, match="d_y"):
        gmm.mcgdiff_problem(8, 9, 0)


def test_sliced_wasserstein_exact_values():
    a = torch.randn(300, 4, generator=_gen(1), dtype=torch.float64)
    assert gmm.sliced_wasserstein(a, a, generator=_gen(2)) == pytest.approx(0.0, abs=1e-12)
    # a translate by v: every slice's W1 is |theta . v|, so SW = mean |theta . v| over the same directions
    v = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    theta = torch.randn(4, 100, generator=_gen(3), dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    expected = float((v @ theta).abs().mean())
    assert gmm.sliced_wasserstein(a, a + v, generator=_gen(3)) == pytest.approx(expected, rel=1e-10)
    sw = [gmm.sliced_wasserstein(a, a + t * v, generator=_gen(4)) for t in (0.5, 1.0, 2.0)]
    assert sw[0] < sw[1] < sw[2]
    # unequal sizes, 1-D: identical to scipy's W1
    b = torch.randn(170, 1, generator=_gen(5), dtype=torch.float64) + 0.4
    ref = wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy())
    assert gmm.sliced_wasserstein(a[:, :1], b, num_slices=3) == pytest.approx(ref, rel=1e-10)
    with pytest.raises(ValueError, match="a, b"):
        gmm.sliced_wasserstein(a, b)


def test_noise_floor_and_separation():
    pb = gmm.mcgdiff_problem(8, 1, seed=0)
    g = _gen(6)
    floor = gmm.noise_floor(pb.posterior, 500, 100, generator=g)
    assert 0.0 < floor < float("inf")
    ref = pb.posterior.sample(500, g)
    prior_sw = gmm.sliced_wasserstein(pb.prior.sample(500, g), ref, generator=g)
    assert prior_sw > 3.0 * floor
