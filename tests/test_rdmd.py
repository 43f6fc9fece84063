"""RDMD (samplers/rdmd.py): one update, branch weights, NFE, determinism, units, and exact Gaussian problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from exact_problems import gaussian_problem, posterior_mean_error, relative_error
from spec_values import ddpm_sigma

from zsir.operators import LinearOperator, MatrixOperator
from zsir.priors.base import Prior
from zsir.samplers import SAMPLERS
from zsir.samplers.rdmd import RDMD
from zsir.samplers.schedules import ddpm_linear_alphas_cumprod
from zsir.samplers.steps import ls_gradient


class Recorder(Prior):
    """N(0, v I) prior (MMSE denoiser ``v x / (v + sigma^2)``) that records every call."""

    kind = "mmse"

    def __init__(self, channels=1, v=0.25, sigma_max=float("inf"), table=False):
        super().__init__()
        self.channels, self.v, self.sigma_max = channels, v, sigma_max
        if table:
            self.alphas_cumprod = torch.as_tensor(ddpm_linear_alphas_cumprod())
        self.calls = []

    def _denoise(self, x, sigma, **kw):
        out = self.v * x / (self.v + sigma**2)
        self.calls.append((x.clone(), sigma.flatten().clone(), out.clone()))
        return out


def _op(d=16, m=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(m, d, generator=g, dtype=torch.float64)
    return MatrixOperator(M / torch.linalg.matrix_norm(M, 2), (1, 4, 4))


def _y(op, B=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, 4, 4, generator=g, dtype=torch.float64) * 0.5
    return op.A(x) + 0.1 * torch.randn(op.A(x).shape, generator=g, dtype=torch.float64)


def _sig(v, B=1):
    return torch.full((B, 1, 1, 1), v, dtype=torch.float64)


def test_registered():
    assert SAMPLERS.get("rdmd") is RDMD


def test_one_update_identity_operator():
    prior = Recorder(v=0.3)
    identity = LinearOperator.from_function(lambda x: x, (1, 4, 4), At=lambda y: y)
    y = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = RDMD(prior, steps=2, progress=False, init="pinv", lambda_=20.0, tau=0.5)
    z = s(y, identity, _sig(0.2), torch.Generator().manual_seed(3))
    (_, _, d), (_, sig_t, x_hat) = prior.calls
    sigma_img = 0.1
    mu = 20 * 0.5 * sigma_img**2
    rho = 20 * 0.5 * sigma_img**2 / float(sig_t) ** 2
    torch.testing.assert_close(z, (y + mu * d + rho * x_hat) / (1 + mu + rho))
    assert s.nfe == 2


def test_tau_zero_ignores_stochastic_branch():
    op, prior = _op(), Recorder()
    y = _y(op)
    outs = [
        RDMD(prior, steps=8, progress=False, tau=0.0)(y, op, _sig(0.1), torch.Generator().manual_seed(s))
        for s in (0, 1)
    ]
    torch.testing.assert_close(outs[0], outs[1])  # the diffusion chain's randomness never reaches z
    assert len(prior.calls) == 2 * 7  # only deterministic calls, 7 per run


def test_data_gradient_is_autograd_of_least_squares():
    op = _op()
    y, z = _y(op), torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(0.5 * ((op.A(z) - y) ** 2).sum(), z)
    torch.testing.assert_close(ls_gradient(z.detach(), y, op), auto)


@pytest.mark.parametrize("output, expected", [("z", 2 * 10 - 2), ("x0", 2 * 10 - 1)])
def test_nfe_counts(output, expected):
    op, prior = _op(), Recorder()
    s = RDMD(prior, steps=10, progress=False, output=output)
    assert s.total_nfe() == expected
    s(_y(op), op, _sig(0.1), torch.Generator().manual_seed(0))
    assert s.nfe == len(prior.calls) == expected


@pytest.mark.parametrize("output, expected", [("z", 9), ("x0", 10)])
def test_noiseless_drops_deterministic_branch(output, expected):
    op, prior = _op(), Recorder()
    s = RDMD(prior, steps=10, progress=False, output=output)
    s(_y(op), op, _sig(0.0), torch.Generator().manual_seed(0))
    assert s.nfe == len(prior.calls) == expected  # mu = lambda (1 - tau) sigma_y^2 = 0: D(z) is not called


def test_noiseless_with_tau_zero_warns_that_no_prior_is_used():
    op, prior = _op(), Recorder()
    with pytest.warns(UserWarning, match="no prior term"):
        RDMD(prior, steps=6, progress=False, tau=0.0)(_y(op), op, _sig(0.0), torch.Generator().manual_seed(0))
    assert prior.calls == []


def test_seeded_determinism():
    op = _op()
    y = _y(op, B=2)
    run = lambda seed: RDMD(Recorder(), steps=6, progress=False, zeta=0.3)(  # noqa: E731
        y, op, _sig(0.1, 2), torch.Generator().manual_seed(seed)
    )
    torch.testing.assert_close(run(5), run(5), rtol=0, atol=0)
    assert not torch.allclose(run(5), run(6))


def test_per_sample_sigma_y():
    op = _op()
    y = _y(op, B=2)
    sig = torch.tensor([0.1, 0.04], dtype=torch.float64).reshape(2, 1, 1, 1)
    prior = Recorder()
    batch = RDMD(prior, steps=6, progress=False, tau=0.0)(y, op, sig, None)
    det_levels = torch.stack([c[1] for c in prior.calls])  # (iterations, B) model-unit levels
    for b, s_img in enumerate((0.05, 0.02)):
        ref = 2.0 * np.geomspace(49.0, max(1.0, 255 * s_img), 6)[:-1] / 255  # DPIR: log-spaced 49 -> 255 sigma_y
        np.testing.assert_allclose(det_levels[:, b].numpy(), ref, rtol=1e-6)
        alone = RDMD(Recorder(), steps=6, progress=False, tau=0.0)(y[b : b + 1], op, sig[b : b + 1], None)
        torch.testing.assert_close(batch[b : b + 1], alone)


@pytest.mark.parametrize("scaling", ["none", "sqrt_abar"])
def test_det_input_scaling_discrete_prior(scaling):
    prior = Recorder(table=True)
    op = LinearOperator.from_function(lambda x: x, (1, 4, 4), At=lambda y: y)
    y = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    RDMD(prior, steps=20, progress=False, det_input_scaling=scaling)(y, op, _sig(0.1), None)
    t = 112  # the first deterministic timestep at N = 20, sigma_y 0.05 (docs/samplers/rdmd.md, Schedules)
    x_in, level, _ = prior.calls[0]  # first deterministic call, on z0 = y
    assert float(level) == pytest.approx(ddpm_sigma(t), rel=1e-4)
    factor = np.sqrt(1.0 + ddpm_sigma(t) ** 2) if scaling == "none" else 1.0  # 1 / sqrt(abar_t)
    torch.testing.assert_close(x_in, y * factor, rtol=1e-4, atol=1e-6)
    x_in, level, _ = prior.calls[1]  # stochastic call at t_0 = 999
    assert float(level) == pytest.approx(ddpm_sigma(999), rel=1e-4)


def test_deterministic_prior_is_used_and_counted():
    op, diffusion, denoiser = _op(), Recorder(), Recorder(v=0.1)
    s = RDMD(diffusion, steps=5, progress=False, deterministic_prior=denoiser)
    s(_y(op), op, _sig(0.1), torch.Generator().manual_seed(0))
    assert len(denoiser.calls) == len(diffusion.calls) == 4 and s.nfe == 8


def test_start_truncation_to_prior_sigma_max():
    op, prior = _op(), Recorder(sigma_max=1.0)
    s = RDMD(prior, steps=20, progress=False, tau=1.0)
    # docs/samplers/rdmd.md, Schedules, N = 20: 999, 770, 675, 602, 541, 487, 438, 393, 351, 311, 274, 239, 205, ...;
    # sigma_t <= 1 (abar_t >= 1/2) from t = 239 on (independent float64 table: 1.086 at 274, 0.903 at 239): k0 = 11
    assert ddpm_sigma(274) > 1.0 >= ddpm_sigma(239)
    k0 = 11
    assert s.total_nfe() == 20 - k0 - 1
    s(_y(op), op, _sig(0.1), torch.Generator().manual_seed(0))
    assert s.nfe == 20 - k0 - 1 and max(float(c[1].max()) for c in prior.calls) <= 1.0


def test_output_d_returns_the_deterministic_estimate_of_the_last_z():
    """``output="d"`` = D(z_final, sigma'_{N-1}): one more deterministic call on the z that ``output="z"`` returns,
    at the end of the DPIR schedule, max(1, 255 sigma_y) / 255 = 0.05 in [0, 1] units (sigma_y 0.1 in model
    units), i.e. 0.1 in model units."""
    op, y = _op(), _y(_op())
    z = RDMD(Recorder(), steps=10, progress=False)(y, op, _sig(0.1), torch.Generator().manual_seed(0))
    prior = Recorder()
    s = RDMD(prior, steps=10, progress=False, output="d")
    assert s.total_nfe() == 2 * 10 - 1
    out = s(y, op, _sig(0.1), torch.Generator().manual_seed(0))
    x_in, level, d = prior.calls[-1]
    assert s.nfe == len(prior.calls) == 2 * 10 - 1 and float(level) == pytest.approx(0.1, rel=1e-5)
    torch.testing.assert_close(x_in, z)
    torch.testing.assert_close(out, d)


def test_red_weight_sigma_grows_mu_like_pnp():
    """``red_weight="sigma"``: mu_k = lambda (1 - tau) sigma_y^2 (sigma'_0 / sigma'_k)^2. N = 3, sigma_y = 0.05
    ([0, 1] units): sigma' = 49, sqrt(49 * 12.75), 12.75 (/255), so the second update has mu * 49 / 12.75; with
    A = I and tau = 0 it is z = (y + mu_k d) / (1 + mu_k) exactly."""
    prior = Recorder(v=0.3)
    identity = LinearOperator.from_function(lambda x: x, (1, 4, 4), At=lambda y: y)
    y = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = RDMD(prior, steps=3, progress=False, init="pinv", lambda_=40.0, tau=0.0, red_weight="sigma")
    z = s(y, identity, _sig(0.1), torch.Generator().manual_seed(3))
    mu = 40.0 * 0.05**2 * 49 / 12.75
    torch.testing.assert_close(z, (y + mu * prior.calls[1][2]) / (1 + mu))


def test_truncate_stochastic_keeps_the_deterministic_iterations():
    """``truncate="stochastic"``: a prior covering sigma_t <= 1 (k0 = 11 of 20, test above) skips only the
    stochastic branch of the first k0 iterations; the deterministic branch runs all N - 1 data steps, from
    sigma'_0 = 2 * 49 / 255 (model units)."""
    op, diffusion, denoiser = _op(), Recorder(sigma_max=1.0), Recorder(v=0.1)
    s = RDMD(diffusion, steps=20, progress=False, deterministic_prior=denoiser, truncate="stochastic")
    assert s.total_nfe() == 19 + 8
    s(_y(op), op, _sig(0.1), torch.Generator().manual_seed(0))
    assert len(denoiser.calls) == 19 and len(diffusion.calls) == 20 - 11 - 1 and s.nfe == 27
    assert float(denoiser.calls[0][1]) == pytest.approx(2 * 49 / 255, rel=1e-5)
    assert max(float(c[1].max()) for c in diffusion.calls) <= 1.0
    # without truncation of the prior's range the option changes nothing
    outs = [
        RDMD(Recorder(), steps=8, progress=False, truncate=t)(_y(op), op, _sig(0.1), torch.Generator().manual_seed(0))
        for t in ("all", "stochastic")
    ]
    torch.testing.assert_close(outs[0], outs[1])


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="tau"):
        RDMD(Recorder(), tau=1.5)
    with pytest.raises(ValueError, match="output"):
        RDMD(Recorder(), output="x")
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        RDMD(Recorder(), lam=3)
    with pytest.raises(ValueError, match="init"):
        RDMD(Recorder(), init="bicubic", progress=False)(_y(_op()), _op(), _sig(0.1), None)


def test_pd_mapping_and_presets():
    assert RDMD.pd_params(0.3) == {"texture": 0.6}
    assert RDMD.preset("sr").params["zeta"] == 0.0 and RDMD.preset("deblur").params["zeta"] == 0.3
    assert "rdmd_sr.py" in RDMD.preset("sr").description
    denoiser = RDMD.preset("denoiser").params  # zsir's variant, labelled as such (docs/samplers/rdmd.md)
    assert "not the paper's" in RDMD.preset("denoiser").description
    assert denoiser["output"] == "d" and denoiser["data_step"] == "prox" and denoiser["red_weight"] == "sigma"


# ----- exact Gaussian problems ------------------------------------------------------------------------------


def test_pd0_is_close_to_the_posterior_mean():
    """pd = 0 is RED: the fixed point solves A^T(Az - y) + mu s^2 (C + s^2)^{-1} (z - m) = 0 at the last level
    s = 2 sigma_y (image units), while the posterior mean solves it with sigma_y_model^2 C^{-1}. With lambda =
    4 / sigma_y_model^2 (so mu s^2 = sigma_y_model^2) they differ only by (C + s^2)^{-1} vs C^{-1}, a few per
    cent for this prior; tolerance 8% (the measurement-only pinv start is ~40% away)."""
    p = gaussian_problem("blur", sigma_y=0.1, size=8)
    s = RDMD(p.prior, steps=100, progress=False, tau=0.0, lambda_=4 / 0.1**2)
    out = s(p.y, p.operator, p.sigma, torch.Generator().manual_seed(0))
    assert relative_error(out, p.post_mean) < 0.08


@pytest.mark.parametrize("output", ["z", "x0", "d"])
def test_distortion_grows_with_pd(output):
    """pd adds the zero-mean texture probe at the output's denoiser: the squared distance to the exact posterior
    mean grows with pd 0, 0.5, 1 for every output, at two more network calls (measured pd 1 / pd 0 for output z:
    1.2)."""
    p = gaussian_problem("blur", sigma_y=0.1, size=8, batch=4)
    err, nfe = [], []
    for pd in (0.0, 0.5, 1.0):
        s = RDMD(p.prior, steps=50, progress=False, lambda_=4 / 0.1**2, zeta=1.0, output=output, **RDMD.pd_params(pd))
        err.append(float(((s(p.y, p.operator, p.sigma, torch.Generator().manual_seed(0)) - p.post_mean) ** 2).mean()))
        nfe.append(s.nfe)
    assert err[0] < err[1] < err[2], err
    assert nfe[1] == nfe[2] == nfe[0] + 2 == s.total_nfe()


@pytest.mark.parametrize("kind, tol", [("blur", 0.2), ("inpaint", 0.4)])
def test_stochastic_samples_average_to_the_posterior_mean(kind, tol):
    """tau = 1, zeta = 1, lambda = 4 (rho = sigma_y_model^2 / sigma_t^2, the exact HQS weight), 100 iterations.
    RDMD is not an exact sampler (one gradient step per iteration on a persistent z), so the average of K = 24
    samples keeps a bias: measured ~0.13 (blur) and ~0.31 (inpainting: hidden pixels only feel the prior pulls)
    relative to the exact posterior mean; tolerances 0.2 / 0.4, and the average must beat a single sample."""
    K = 24
    p = gaussian_problem(kind, sigma_y=0.1, size=8)
    s = RDMD(p.prior, steps=100, progress=False, lambda_=4.0, tau=1.0, zeta=1.0)
    out = s(p.y.repeat(K, 1, 1, 1), p.operator, p.sigma.repeat(K, 1, 1, 1), torch.Generator().manual_seed(0))
    err = posterior_mean_error(out.unsqueeze(1), p.post_mean)
    assert err < tol
    assert err < relative_error(out[:1], p.post_mean)
