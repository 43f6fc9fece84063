"""Exact priors (zsir/priors/exact/) against dense linear algebra, finite differences and Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch

from zsir.operators import CircularBlur, Identity, Inpainting, MatrixOperator
from zsir.priors.exact import (
    GaussianConsistency,
    GaussianImageConsistency,
    GaussianImagePrior,
    GaussianMixturePrior,
    MixtureConsistency,
)

D = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----- Gaussian mixture ------------------------------------------------------------------------------------------
def _mixture(kind: str, d: int = 5, K: int = 4, seed: int = 0) -> GaussianMixturePrior:
    g = _gen(seed)
    means = 3.0 * torch.randn(K, d, generator=g, dtype=D)
    weights = torch.rand(K, generator=g, dtype=D) + 0.1
    if kind == "shared":
        covs = 0.7
    elif kind == "iso":
        covs = torch.rand(K, generator=g, dtype=D) + 0.2
    else:
        B = torch.randn(K, d, d, generator=g, dtype=D)
        covs = B @ B.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=D)
    return GaussianMixturePrior(means, weights, covs)


@pytest.mark.parametrize("kind", ["shared", "iso", "full"])
def test_mixture_tweedie_and_score_by_finite_differences(kind):
    gm = _mixture(kind)
    x = 2.0 * torch.randn(6, 5, 1, 1, generator=_gen(1), dtype=D)
    sigma = torch.tensor([0.0, 0.1, 0.5, 1.0, 3.0, 20.0], dtype=D)
    score = gm.score(x, sigma)
    assert torch.allclose(gm.denoise(x, sigma), x + sigma.reshape(-1, 1, 1, 1) ** 2 * score, atol=1e-12)
    h, eye = 1e-5, torch.eye(5, dtype=D).reshape(5, 5, 1, 1)
    fd = torch.stack(
        [(gm.log_prob(x + h * eye[i], sigma) - gm.log_prob(x - h * eye[i], sigma)) / (2 * h) for i in range(5)], dim=1
    )
    assert torch.allclose(fd, score.reshape(6, 5), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("kind", ["iso", "full"])
def test_mixture_log_prob_matches_torch_distributions(kind):
    gm = _mixture(kind)
    x = 2.0 * torch.randn(7, 5, generator=_gen(2), dtype=D)
    for sigma in (0.0, 0.8):
        covs = gm.covariance_matrices() + sigma**2 * torch.eye(5, dtype=D)
        ref = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(gm.weights),
            torch.distributions.MultivariateNormal(gm.means, covariance_matrix=covs),
        ).log_prob(x)
        assert torch.allclose(gm.log_prob(x, sigma), ref, atol=1e-10)


def test_mixture_vp_helpers_match_the_vp_marginal():
    """E[x0 | x_t] = (x_t + (1 - abar) grad log p_t) / sqrt(abar) and eps = -sqrt(1 - abar) grad log p_t, with p_t the
    VP marginal sum_k w_k N(sqrt(abar) mu_k, abar c_k + 1 - abar) built independently (offline.md 1.5)."""
    gm = _mixture("iso")
    x_t = torch.randn(3, 5, 1, 1, generator=_gen(3), dtype=D)
    for abar in (0.999, 0.5, 0.02):
        vp = GaussianMixturePrior(math.sqrt(abar) * gm.means, gm.weights, abar * gm.iso + 1.0 - abar)
        s_t = vp.score(x_t, 0.0)
        assert torch.allclose(gm.denoise_vp(x_t, abar), (x_t + (1 - abar) * s_t) / math.sqrt(abar), atol=1e-10)
        assert torch.allclose(gm.eps_vp(x_t, abar), -math.sqrt(1 - abar) * s_t, atol=1e-10)
    per_sample = torch.tensor([0.9, 0.3, 0.05], dtype=D)
    x0 = gm.denoise_vp(x_t, per_sample)
    eps = gm.eps_vp(x_t, per_sample)
    a = per_sample.reshape(-1, 1, 1, 1)
    assert torch.allclose(a.sqrt() * x0 + (1 - a).sqrt() * eps, x_t, atol=1e-10)
    with pytest.raises(ValueError, match="abar"):
        gm.denoise_vp(x_t, 0.0)


def test_mixture_posterior_single_gaussian_matches_dense_bayes():
    g = _gen(4)
    d, m = 6, 3
    B = torch.randn(d, d, generator=g, dtype=D)
    S = B @ B.T / d + 0.2 * torch.eye(d, dtype=D)
    mu = torch.randn(d, generator=g, dtype=D)
    A = torch.randn(m, d, generator=g, dtype=D)
    y = torch.randn(m, generator=g, dtype=D)
    s = 0.3
    post = GaussianMixturePrior(mu[None], [1.0], S[None]).posterior(A, y, s)
    prec = torch.linalg.inv(S) + A.T @ A / s**2
    cov = torch.linalg.inv(prec)
    mean = cov @ (torch.linalg.solve(S, mu) + A.T @ y / s**2)
    assert torch.allclose(post.means[0], mean, atol=1e-10)
    assert torch.allclose(post.covs[0], cov, atol=1e-10)
    assert float(post.weights[0]) == pytest.approx(1.0)


def test_mixture_posterior_mean_and_weights_match_importance_sampling():
    """d = 2, K = 3, one noisy linear measurement: 400k prior samples weighted by N(y; A x, s^2) (ESS ~ 1e5) give
    the posterior mean to ~1e-2 and the component probabilities to ~3e-3; tolerances 0.03 / 0.01."""
    means = torch.tensor([[-3.0, 0.0], [2.0, 2.0], [1.0, -3.0]], dtype=D)
    gm = GaussianMixturePrior(means, [0.5, 0.3, 0.2], torch.tensor([1.0, 0.5, 2.0], dtype=D))
    A = torch.tensor([[1.0, 0.5]], dtype=D)
    y, s = torch.tensor([0.3], dtype=D), 0.8
    post = gm.posterior(A, y, s)
    x, k = gm.sample(400_000, _gen(5), return_components=True)
    x = x.reshape(-1, 2)
    logw = -0.5 * ((x @ A.T - y) ** 2).sum(1) / s**2
    w = torch.softmax(logw, dim=0)
    assert 1.0 / float((w**2).sum()) > 5e4
    assert torch.allclose(post.mean(), w @ x, atol=0.03)
    comp = torch.zeros(3, dtype=D).index_add_(0, k, w)
    assert torch.allclose(post.weights, comp, atol=0.01)
    assert float(post.weights.sum()) == pytest.approx(1.0, abs=1e-12)


def test_mixture_posterior_from_an_operator_and_noiseless():
    """An image-shaped mixture: Inpainting (densified column by column) equals the selection matrix; with
    sigma_y = 0 every posterior component reproduces the observed pixels exactly."""
    gm = GaussianMixturePrior(torch.randn(3, 1, 3, 3, generator=_gen(6), dtype=D), [0.2, 0.3, 0.5], 0.5)
    mask = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=D)
    op = Inpainting(mask)
    sel = torch.eye(9, dtype=D)[mask.flatten().bool()]
    x = gm.sample(2, _gen(7))
    y_img = op.A(x)
    y_sel = x.reshape(2, 9) @ sel.T
    posts_op = gm.posterior(op, y_img, 0.1)
    posts_sel = gm.posterior(sel, y_sel, 0.1)
    assert isinstance(posts_op, list) and len(posts_op) == 2
    for a, b in zip(posts_op, posts_sel, strict=True):
        # the operator form carries 4 extra zero measurements, which do not change the posterior
        assert torch.allclose(a.means, b.means, atol=1e-10) and torch.allclose(a.weights, b.weights, atol=1e-10)
        assert torch.allclose(a.covs, b.covs, atol=1e-10)
    exact = gm.posterior(MatrixOperator(sel, (1, 3, 3)), y_sel[0], 0.0)
    assert torch.allclose(exact.means @ sel.T, y_sel[0].expand(3, -1), atol=1e-10)
    draws = exact.sample(50, _gen(8)).reshape(50, 9)
    assert torch.allclose(draws @ sel.T, y_sel[0].expand(50, -1), atol=1e-8)


def test_mixture_sample_moments():
    gm = _mixture("full", d=3, K=3)
    x = gm.sample(100_000, _gen(9)).reshape(-1, 3)
    assert torch.allclose(x.mean(0), gm.mean(), atol=0.05)
    assert torch.allclose(torch.cov(x.T), gm.covariance(), atol=0.1, rtol=0.02)


def test_mixture_rejects_bad_input():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixturePrior(torch.zeros(2, 3), [1.0, -1.0])
    with pytest.raises(ValueError, match="covs"):
        GaussianMixturePrior(torch.zeros(2, 3), [1.0, 1.0], torch.ones(3, 3))
    with pytest.raises(ValueError, match="x"):
        GaussianMixturePrior(torch.zeros(2, 3), [1.0, 1.0]).score(torch.zeros(1, 4), 0.1)


# ----- stationary Gaussian image prior ---------------------------------------------------------------------------
SHAPE = (1, 8, 8)
N_PIX = 64


def _image_prior(mean: float = 0.1) -> GaussianImagePrior:
    return GaussianImagePrior(SHAPE, alpha=2.0, scale=0.5, mean=mean)


def _dense_cov(prior: GaussianImagePrior) -> torch.Tensor:
    eye = torch.eye(N_PIX, dtype=D).reshape(N_PIX, *SHAPE)
    return prior.covariance_matvec(eye).reshape(N_PIX, N_PIX)


def _dense_op(op) -> torch.Tensor:
    eye = torch.eye(N_PIX, dtype=D).reshape(N_PIX, *SHAPE)
    return op.A(eye).reshape(N_PIX, -1).T


def _dense_posterior(prior, op, y, s):
    S, A = _dense_cov(prior), _dense_op(op)
    m = prior.mean.reshape(-1)
    # pinv: with sigma_y = 0 the inpainting G has zero rows/columns (holes); the system stays consistent
    Gi = torch.linalg.pinv(A @ S @ A.T + s**2 * torch.eye(A.shape[0], dtype=D), hermitian=True)
    return m + S @ A.T @ Gi @ (y.reshape(-1) - A @ m), S - S @ A.T @ Gi @ A @ S


def _operators():
    mask = (torch.rand(1, 1, 8, 8, generator=_gen(10)) > 0.5).to(D)
    kernel = torch.tensor([[0.0, 0.15, 0.0], [0.15, 0.4, 0.15], [0.0, 0.15, 0.0]], dtype=D)
    return {
        "identity": Identity(),
        "blur": CircularBlur(kernel),
        "inpaint": Inpainting(mask),
        "matrix": MatrixOperator(torch.randn(24, N_PIX, generator=_gen(11), dtype=D), SHAPE),
    }


def test_image_prior_spectrum_covariance_and_samples():
    prior = _image_prior()
    lam = prior.spectrum()
    assert lam.shape == (8, 8) and float(lam.mean()) == pytest.approx(0.25)
    assert torch.allclose(lam, lam.flip(0, 1).roll((1, 1), (0, 1)))  # symmetric under f -> -f
    S = _dense_cov(prior)
    assert torch.allclose(S, S.T, atol=1e-15) and torch.allclose(S.diagonal(), torch.full((N_PIX,), 0.25, dtype=D))
    x = prior.sample(20_000, _gen(12), dtype=D)
    assert x.shape == (20_000, *SHAPE)
    assert float(x.std()) == pytest.approx(0.5, rel=0.02) and float(x.mean()) == pytest.approx(0.1, abs=0.02)
    assert torch.allclose(torch.cov(x.reshape(-1, N_PIX).T), S, atol=0.015)
    xt = x[:5]
    ref = torch.distributions.MultivariateNormal(prior.mean.reshape(-1), S).log_prob(xt.reshape(5, -1))
    assert torch.allclose(prior.log_prob(xt), ref, atol=1e-8)


def test_image_prior_denoiser_matches_dense_wiener_filter():
    prior = _image_prior()
    S, m = _dense_cov(prior), prior.mean.reshape(-1)
    x = torch.randn(4, *SHAPE, generator=_gen(13), dtype=D)
    sigma = torch.tensor([0.0, 0.05, 0.5, 3.0], dtype=D)
    out = prior.denoise(x, sigma)
    for b in range(4):
        ref = m + S @ torch.linalg.solve(S + sigma[b] ** 2 * torch.eye(N_PIX, dtype=D), x[b].reshape(-1) - m)
        assert torch.allclose(out[b].reshape(-1), ref, atol=1e-10)
    assert prior.denoise(x.float(), 0.5).dtype == torch.float32
    with pytest.raises(ValueError, match="x"):
        prior.denoise(torch.zeros(1, 1, 4, 4), 0.1)


@pytest.mark.parametrize("name", ["identity", "blur", "inpaint", "matrix"])
def test_image_posterior_mean_matches_dense_formula(name):
    """FFT-diagonal operators (identity, blur) use the Fourier closed form, the others conjugate gradients; all
    equal the dense m + S A^T (A S A^T + s^2 I)^-1 (y - A m), per-sample sigma_y included (0 = noiseless)."""
    prior, op = _image_prior(), _operators()[name]
    assert (prior.fft_multiplier(op) is not None) == (name in ("identity", "blur"))
    x = prior.sample(2, _gen(14), dtype=D)
    y = op.A(x)
    sig = [0.0, 0.2] if name in ("inpaint", "matrix") else [0.05, 0.2]
    sigma = torch.tensor(sig, dtype=D).reshape(2, 1, 1, 1)
    y = y + sigma * torch.randn(y.shape, generator=_gen(15), dtype=D)
    out = prior.posterior_mean(y, op, sigma)
    for b in range(2):
        ref, _ = _dense_posterior(prior, op, y[b], sig[b])
        assert torch.allclose(out[b].reshape(-1), ref, atol=1e-8), (name, b)


@pytest.mark.parametrize("name", ["blur", "inpaint"])
def test_image_posterior_samples_have_the_exact_moments(name):
    """2000 exact samples (Fourier square root for blur, Matheron's rule + CG for inpainting): every pixel's
    empirical mean is within 5 standard errors of the exact mean and its variance within 15 % (SE ~ 3 %)."""
    prior, op = _image_prior(), _operators()[name]
    s = 0.1
    x = prior.sample(1, _gen(16), dtype=D)
    y = op.A(x) + s * torch.randn(op.A(x).shape, generator=_gen(17), dtype=D)
    samples = prior.posterior_sample(y, op, s, num_samples=2000, generator=_gen(18))
    assert samples.shape == (2000, 1, *SHAPE)
    mean, cov = _dense_posterior(prior, op, y[0], s)
    var = cov.diagonal()
    emp = samples.reshape(2000, -1)
    assert ((emp.mean(0) - mean).abs() / (var / 2000).sqrt()).max() < 5.0
    assert torch.allclose(emp.var(0), var, rtol=0.15)
    if name == "blur":
        pv = prior.posterior_variance(op, s)
        assert torch.allclose(pv.reshape(-1), var, atol=1e-12)


def test_image_posterior_noiseless_inpainting_samples_keep_observed_pixels():
    prior, op = _image_prior(), _operators()["inpaint"]
    x = prior.sample(1, _gen(19), dtype=D)
    y = op.A(x)
    samples = prior.posterior_sample(y, op, 0.0, num_samples=8, generator=_gen(20))
    mask = op.mask.to(D)
    assert torch.allclose(samples * mask, y.expand_as(samples), atol=1e-7)
    assert float((samples * (1 - mask)).std()) > 0.05


# ----- consistency functions -------------------------------------------------------------------------------------
def test_gaussian_consistency_closed_form_and_boundary():
    x = torch.randn(3, 2, 4, 4, generator=_gen(21), dtype=D)
    f0 = GaussianConsistency(0.2, 0.5, (2, 4, 4), sigma_min=0.0)
    sigma = torch.tensor([0.0, 1.0, 80.0], dtype=D).reshape(3, 1, 1, 1)
    assert torch.allclose(f0.denoise(x, sigma), 0.2 + (x - 0.2) * 0.5 / torch.sqrt(0.25 + sigma**2))
    f = GaussianConsistency(0.2, 0.5, (2, 4, 4))
    assert f.kind == "consistency" and (f.sigma_min, f.sigma_max) == (0.002, 80.0)
    assert torch.allclose(f.denoise(x, 0.002), x, atol=1e-14)


def test_mixture_consistency_single_gaussian_matches_closed_form():
    gm = GaussianMixturePrior(torch.full((1, 3), 0.3, dtype=D), [1.0], 0.25, shape=(3, 1, 1))
    ode, closed = MixtureConsistency(gm), GaussianConsistency(0.3, 0.5, (3, 1, 1))
    x = 4.0 * torch.randn(4, 3, 1, 1, generator=_gen(22), dtype=D)
    sigma = torch.tensor([0.002, 0.3, 5.0, 80.0], dtype=D)
    out = ode.denoise(x, sigma)
    assert torch.allclose(out, closed.denoise(x, sigma), atol=1e-6)
    assert torch.equal(out[0], x[0])


def test_image_consistency_matches_the_pf_ode_of_the_dense_gaussian():
    """GaussianImagePrior.consistency() (closed form per Fourier coefficient) equals the ODE oracle of the same
    Gaussian written as a one-component full-covariance mixture (d = 16)."""
    prior = GaussianImagePrior((1, 4, 4), mean=-0.1)
    eye = torch.eye(16, dtype=D).reshape(16, 1, 4, 4)
    S = prior.covariance_matvec(eye).reshape(16, 16)
    gm = GaussianMixturePrior(prior.mean.reshape(1, 16), [1.0], S[None], shape=(1, 4, 4))
    cons = prior.consistency()
    assert isinstance(cons, GaussianImageConsistency) and cons.kind == "consistency"
    x = 2.0 * torch.randn(2, 1, 4, 4, generator=_gen(23), dtype=D)
    sigma = torch.tensor([0.7, 20.0], dtype=D)
    assert torch.allclose(cons.denoise(x, sigma), MixtureConsistency(gm).denoise(x, sigma), atol=1e-6)
    assert torch.allclose(cons.denoise(x, 0.002), x, atol=1e-14)


def test_mixture_consistency_is_consistent_along_trajectories():
    """f(x, sigma_1) == f(flow(x, sigma_1 -> sigma_2), sigma_2) for a bimodal mixture (the defining property)."""
    gm = GaussianMixturePrior(torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=D), [0.4, 0.6], 0.3)
    f = MixtureConsistency(gm)
    x = torch.tensor([[0.5, 3.0]], dtype=D)
    mid = torch.from_numpy(f.flow(x[0].numpy(), 4.0, 0.8)).reshape(1, 2, 1, 1)
    a, b = f.denoise(x.reshape(1, 2, 1, 1), 4.0), f.denoise(mid, 0.8)
    assert torch.allclose(a, b, atol=1e-6)
    assert float((a.reshape(2) - gm.means).norm(dim=1).min()) < 2.0  # it lands near a mode, not in between
