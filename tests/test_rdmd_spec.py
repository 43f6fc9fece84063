"""RDMD against values and pseudocode of the specification rdmd.md (1.1 table ends, 1.2 (c) weights, section 2
presets, 1.3-1.4 main loop re-implemented independently in VP form)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zsir.operators import AveragePoolSR, SeparableBlur, gaussian_kernel
from zsir.priors.diffusion import DiscreteVPPrior
from zsir.samplers.rdmd import RDMD, rdmd_timesteps, rdmd_weights
from zsir.samplers.schedules import ddpm_linear_alphas_cumprod
from zsir.units import sigma_from_abar


# ----- 1.1: ends of the VE-equivalent sigma table of the DDPM linear schedule ----------------------------------
def test_sigma_table_ends():
    s = sigma_from_abar(ddpm_linear_alphas_cumprod())
    assert s.shape == (1000,) and bool((np.diff(s) > 0).all())
    assert float(s[0]) == pytest.approx(0.0100, abs=5e-5)
    assert float(s[999]) == pytest.approx(157.4, abs=0.05)


# ----- 1.2 (c): the rows of the weights table not covered by test_schedules.py ---------------------------------
# k: (t_k, sigma_t, rho_t, step, data share, RED share, diffusion share); lambda 20, tau 0.5, sigma_y 0.05
WEIGHT_ROWS = {
    10: (682, 10.59, 2.2e-4, 0.975, 0.975, 0.024, 0.0002),
    75: (129, 0.444, 0.127, 0.868, 0.868, 0.022, 0.110),
    95: (20, 0.079, 3.97, 0.200, 0.200, 0.005, 0.795),
}


@pytest.mark.parametrize("k", sorted(WEIGHT_ROWS))
def test_weights_table_rows(k):
    t_ref, sig_ref, rho_ref, step_ref, data, red, diff = WEIGHT_ROWS[k]
    t = rdmd_timesteps(100)[k]
    assert t == t_ref
    sig = float(sigma_from_abar(ddpm_linear_alphas_cumprod())[t])
    assert sig == pytest.approx(sig_ref, rel=1e-3, abs=5e-4)  # printed to 3-4 significant digits
    mu, rho, step = rdmd_weights(20.0, 0.5, 0.05, sig)
    assert mu == pytest.approx(0.025)
    assert rho == pytest.approx(rho_ref, rel=0.02)
    assert step == pytest.approx(step_ref, abs=6e-4)
    # shares of the pulls in z_new = step (z - g) + step mu d + step rho x_hat: data = step, RED = step mu, ...
    assert step == pytest.approx(data, abs=6e-4)
    assert step * mu == pytest.approx(red, abs=6e-4)
    assert step * rho == pytest.approx(diff, abs=6e-4 if diff > 0.01 else 6e-5)


# ----- section 2: the code's defaults for rdmd_sr.py and rdmd_deblur.py -----------------------------------------
SPEC_DEFAULTS = {
    "sr": {"lambda_": 20.0, "tau": 0.5, "zeta": 0.0, "steps": 100, "output": "z", "init": "bicubic"},
    "deblur": {"lambda_": 20.0, "tau": 0.5, "zeta": 0.3, "steps": 100, "output": "x0", "init": "y"},
}


@pytest.mark.parametrize("name", ["sr", "deblur"])
def test_presets_match_spec_defaults(name):
    params = RDMD.preset(name).params
    for key, value in SPEC_DEFAULTS[name].items():
        assert params.get(key) == value, key
    script = {"sr": "rdmd_sr.py", "deblur": "rdmd_deblur.py"}[name]
    assert script in RDMD.preset(name).description
    s = RDMD(_prior(), progress=False, **params)
    assert s.steps == 100 and s.params["det_input_scaling"] == "none"  # D(z, t') fed z as is (5.4 #3)
    assert {k: s.params[k] for k in ("lambda_", "tau", "zeta", "output", "init")} == {
        k: v for k, v in SPEC_DEFAULTS[name].items() if k != "steps"
    }


def test_class_defaults_are_the_sr_script():
    hp = RDMD.hyperparameters
    assert RDMD.default_steps == 100
    keys = ("lambda_", "tau", "zeta", "output", "det_input_scaling")
    assert tuple(hp[k] for k in keys) == (20.0, 0.5, 0.0, "z", "none")


# ----- 1.3-1.4: the main loop against an independent float64 VP re-implementation ------------------------------
class FakeEps(nn.Module):
    """A small nonlinear, timestep-dependent epsilon network (no parameters: runs in the input dtype)."""

    def forward(self, v, t):
        c = torch.as_tensor(np.sqrt(1.0 - ABAR[t.cpu().numpy()]), dtype=v.dtype).reshape(-1, 1, 1, 1)
        return c * v + 0.2 * torch.tanh(3.0 * v.roll(1, -1) - 0.5) * (1.0 + t.reshape(-1, 1, 1, 1) / 1000.0)


ABAR = ddpm_linear_alphas_cumprod().astype(np.float64)  # the float32 table, exactly


def _prior():
    return DiscreteVPPrior(FakeEps(), ddpm_linear_alphas_cumprod(), "epsilon", channels=1)


def _bicubic_matrix(n_in: int, f: int) -> torch.Tensor:
    """cv2.resize INTER_CUBIC up-sampling matrix: Keys a = -0.75, half-pixel centres, replicated borders."""

    def w(x, a=-0.75):
        x = abs(x)
        return (a + 2) * x**3 - (a + 3) * x**2 + 1 if x <= 1 else (a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a)

    U = torch.zeros(n_in * f, n_in, dtype=torch.float64)
    for i in range(n_in * f):
        src = (i + 0.5) / f - 0.5
        x0 = math.floor(src)
        for j in range(x0 - 1, x0 + 3):
            U[i, min(max(j, 0), n_in - 1)] += w(src - j)
    return U


def _reference(y, A, At, z0, sigma_y01, N, zeta, output, gen, lam=20.0, tau=0.5, sf=1):
    """rdmd.md 1.2-1.4 in VP form: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, D_theta from the eps network."""
    sig = np.sqrt(1.0 - ddpm_linear_alphas_cumprod()) / np.sqrt(ddpm_linear_alphas_cumprod())  # float32
    seq = [int(v) for v in np.sqrt(np.linspace(0, 1000**2, N))]
    seq[-1] -= 1
    t_k = [999 - s for s in seq]
    sig_p = np.logspace(np.log10(49.0), np.log10(max(sf, 255.0 * sigma_y01)), N) / 255.0
    t_p = [int(np.abs(sig - np.float32(2.0 * s)).argmin()) for s in sig_p]
    net = FakeEps()

    def D(v, t):
        a = ABAR[t]
        eps = net(v, torch.tensor([t]))
        return (v / math.sqrt(a) - math.sqrt(1.0 / a - 1.0) * eps).clamp(-1.0, 1.0)

    mu = lam * (1 - tau) * sigma_y01**2
    z = z0.clone()
    # library start x = z + sigma_{t_0} n (VE), i.e. sqrt(abar_999) z + sqrt(1 - abar_999) n (VP); for deblurring
    # the spec's start is sqrt(abar_999/abar_ty) y + sqrt(...) n (1.3), a ~1e-7 difference (rdmd.py docstring)
    n = torch.randn(z.shape, generator=gen, dtype=torch.float32).double()
    x = math.sqrt(ABAR[999]) * z + math.sqrt(1.0 - ABAR[999]) * n
    for k in range(N):
        t = t_k[k]
        d = D(z, t_p[k])
        x_hat = D(x, t)
        if k < N - 1:
            rho = lam * tau * max(sigma_y01, 1e-3) ** 2 / float(sig[t]) ** 2
            g = At(A(z) - y)
            z = z - (1.0 / (1.0 + mu + rho)) * (g + mu * (z - d) + rho * (z - x_hat))
            tm = t_k[k + 1]
            eps_hat = (x - math.sqrt(ABAR[t]) * z) / math.sqrt(1.0 - ABAR[t])  # from the UPDATED z
            mix = math.sqrt(1.0 - zeta) * eps_hat
            if zeta > 0:
                mix = mix + math.sqrt(zeta) * torch.randn(z.shape, generator=gen, dtype=torch.float32).double()
            x = math.sqrt(ABAR[tm]) * z + math.sqrt(1.0 - ABAR[tm]) * mix
        else:
            x = z
    return z if output == "z" else x_hat


def _truth():
    g = torch.Generator().manual_seed(11)
    return (torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64) * 1.6 - 0.8), g


def test_main_loop_sr_matches_spec_pseudocode():
    op = AveragePoolSR(2)
    x_true, g = _truth()
    y = op.A(x_true) + 0.1 * torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    # independent A / A^T of 2x2 block averaging
    A = lambda v: F.avg_pool2d(v, 2)  # noqa: E731
    At = lambda r: r.repeat_interleave(2, -2).repeat_interleave(2, -1) / 4.0  # noqa: E731
    torch.testing.assert_close(op.A(x_true), A(x_true))
    U = _bicubic_matrix(4, 2)
    z0 = U @ y @ U.T  # 2 bicubic(y01) - 1 == bicubic(y): the weights sum to 1
    N = 6
    s = RDMD(_prior(), progress=False, **{**RDMD.preset("sr").params, "steps": N})
    out = s(y, op, torch.full((1, 1, 1, 1), 0.1, dtype=torch.float64), torch.Generator().manual_seed(7))
    ref = _reference(y, A, At, z0, 0.05, N, 0.0, "z", torch.Generator().manual_seed(7), sf=2)
    assert s.nfe == 2 * N - 2
    assert not torch.allclose(ref, z0, atol=1e-2)  # the loop moved z
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_main_loop_deblur_matches_spec_pseudocode():
    k1 = gaussian_kernel(5, 1.0)
    op = SeparableBlur(k1)
    x_true, g = _truth()
    y = op.A(x_true) + 0.1 * torch.randn(1, 1, 8, 8, generator=g, dtype=torch.float64)
    k2 = torch.outer(k1, k1).reshape(1, 1, 5, 5)
    A = lambda v: F.conv2d(v, k2, padding=2)  # noqa: E731  (symmetric kernel, zero padding: A^T = A)
    torch.testing.assert_close(op.A(x_true), A(x_true))
    N = 6
    s = RDMD(_prior(), progress=False, **{**RDMD.preset("deblur").params, "steps": N})
    out = s(y, op, torch.full((1, 1, 1, 1), 0.1, dtype=torch.float64), torch.Generator().manual_seed(3))
    ref = _reference(y, A, A, y, 0.05, N, 0.3, "x0", torch.Generator().manual_seed(3))
    assert s.nfe == 2 * N - 1
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # zeta = 0.3 draws fresh noise each re-noising: another seed changes the output
    other = _reference(y, A, A, y, 0.05, N, 0.3, "x0", torch.Generator().manual_seed(4))
    assert not torch.allclose(ref, other, atol=1e-3)
