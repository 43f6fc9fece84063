"""The in-place update steps (samplers/steps.py ``out=``) give the algorithm-box result of DiffPIR, draw for draw."""

from __future__ import annotations

import math

import pytest
import torch

from zsir import operators
from zsir.priors.denoiser import DenoiserPrior
from zsir.samplers import SAMPLERS
from zsir.samplers.steps import renoise_or_inject


def _toy_prior() -> DenoiserPrior:
    """A deterministic affine 'denoiser' in [0, 1] units; sigma_max 100 keeps the full schedule (pure-noise start)."""
    return DenoiserPrior(lambda x, s: 0.8 * x + 0.1 * (1.0 + s), sigma_max=100.0, name="affine")


def _prox_full_fft(op: operators.CircularBlur, z, y, gamma):
    """``argmin gamma/2 ||A x - y||^2 + 1/2 ||x - z||^2`` with the full complex spectrum (not the rfft2 half)."""
    k = op.spectrum(*z.shape[-2:], dtype=torch.float64).to(torch.complex128)
    z64, y64, g = z.double(), y.double(), gamma.double()
    num = g * k.conj() * torch.fft.fft2(y64) + torch.fft.fft2(z64)
    return torch.fft.ifft2(num / (g * k.abs() ** 2 + 1.0)).real


@pytest.mark.parametrize("zeta", [0.0, 0.3, 1.0])
def test_diffpir_matches_the_algorithm_box(zeta):
    """x0 = D(x); x0_hat = prox; eps = (x - x0_hat) / sigma; x = x0_hat + sigma' (sqrt(1-zeta) eps + sqrt(zeta) n)."""
    steps, lam = 6, 2.0
    op = operators.CircularBlur(operators.gaussian_kernel_2d(5, 1.0))
    gen = torch.Generator().manual_seed(0)
    y = op.A(torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1) + 0.1 * torch.randn(2, 3, 16, 16, generator=gen)
    sigma_y = torch.tensor([0.1, 0.2]).view(2, 1, 1, 1)  # model units
    prior = _toy_prior()
    sampler = SAMPLERS.get("diffpir")(prior, steps=steps, progress=False, lambda_=lam, zeta=zeta)
    out = sampler(y, op, sigma_y, torch.Generator().manual_seed(7))

    levels, g = sampler.levels, torch.Generator().manual_seed(7)
    x = levels[0] * torch.randn(y.shape, generator=g)
    for k in range(steps - 1):
        sigma, nxt = levels[k], levels[k + 1]
        x0 = prior.denoise(x, sigma)
        rho = lam * (sigma_y / 2).clamp_min(1e-3) ** 2 / sigma**2  # rho with sigma_y in [0, 1] units
        x0_hat = _prox_full_fft(op, x0, y, 1.0 / rho).float()
        eps = (x - x0_hat) / sigma
        x = x0_hat + nxt * math.sqrt(1 - zeta) * eps
        if zeta > 0:
            x = x + nxt * math.sqrt(zeta) * torch.randn(y.shape, generator=g)
    expected = prior.denoise(x, levels[steps - 1])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("eta_ni", [None, 0.6])
def test_renoise_or_inject_into_eps_equals_a_new_tensor(eta_ni):
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    expected = renoise_or_inject(x0, eps, 0.7, 0.2, torch.Generator().manual_seed(2), eta_ni)
    buf = eps.clone()
    got = renoise_or_inject(x0, buf, 0.7, 0.2, torch.Generator().manual_seed(2), eta_ni, out=buf)
    assert got.data_ptr() == buf.data_ptr()
    assert torch.equal(got, expected)
