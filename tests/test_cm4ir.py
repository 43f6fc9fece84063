"""CM4IR (samplers/cm4ir.py): projection, NFE, deltas, median fill, noise injection, exact Gaussian problems."""

from __future__ import annotations

import math

import pytest
import torch
from exact_problems import gaussian_problem, posterior_mean_error, relative_error
from spec_values import CM4IR_TAUS

from zsir.operators import MatrixOperator
from zsir.priors.base import Prior
from zsir.samplers import SAMPLERS
from zsir.samplers.cm4ir import CM4IR, median_fill, unobserved_mask
from zsir.samplers.steps import inject_noise


class Shrink(Prior):
    """N(0, v I) prior; as ``kind="consistency"`` it is the exact consistency function ``sqrt(v / (v + s^2)) x``
    with the boundary scalings taken at ``scalings_sigma`` (records every call and its kwargs)."""

    def __init__(self, kind="mmse", v=0.25):
        super().__init__()
        self.kind, self.v, self.channels, self.calls = kind, v, 1, []

    def _denoise(self, x, sigma, scalings_sigma=None, **kw):
        self.calls.append((sigma.flatten().clone(), scalings_sigma))
        if self.kind == "mmse":
            return self.v * x / (self.v + sigma**2)
        s_bc = sigma if scalings_sigma is None else torch.as_tensor(scalings_sigma).to(x)
        return torch.sqrt(self.v / (self.v + sigma**2)) * x * (1 + 0.1 * (s_bc - sigma))


def _sig(v, B=1):
    return torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1, 1, 1).expand(B, 1, 1, 1).clone()


def _problem(m=10, B=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(m, 16, generator=g, dtype=torch.float64) / 4
    op = MatrixOperator(M, (1, 4, 4))
    x = torch.randn(B, 1, 4, 4, generator=g, dtype=torch.float64).clamp(-1, 1) * 0.5
    return op, op.A(x)


def test_registered_and_nfe():
    op, y = _problem()
    s = CM4IR(Shrink(), progress=False)
    assert SAMPLERS.get("cm4ir") is CM4IR and s.total_nfe() == 4
    s(y, op, _sig(0.1), torch.Generator().manual_seed(0))
    assert s.nfe == 4
    s = CM4IR(Shrink(), steps=6, progress=False)
    s(y, op, _sig(0.1), torch.Generator().manual_seed(0))
    assert s.nfe == 6


def test_noiseless_output_satisfies_measurements_matrix():
    op, y = _problem()
    out = CM4IR(Shrink(), progress=False)(y, op, _sig(0.0), torch.Generator().manual_seed(0))
    assert float((op.A(out) - y).abs().max()) < 1e-4


def test_per_sample_final_rule():
    op, y = _problem(B=2)
    out = CM4IR(Shrink(), progress=False)(y, op, _sig([0.1, 0.0], B=2), torch.Generator().manual_seed(0))
    res = (op.A(out) - y).flatten(1).abs().max(1).values
    assert float(res[1]) < 1e-4 and float(res[0]) > 1e-2  # noisy sample: last x0, no back-projection


def test_deltas_length_error():
    with pytest.raises(ValueError, match="deltas: expected 4 values"):
        CM4IR(Shrink(), deltas=[0.1, 0.2])
    with pytest.raises(ValueError, match="deltas: expected 6 values"):
        CM4IR(Shrink(), steps=6, deltas=[0.1, 0.2, 0.0, 0.0])


@pytest.mark.parametrize("kind", ["mmse", "consistency"])
def test_injection_types(kind):
    op, y = _problem()
    deltas = [0.2, 0.5, 0.1, 0.3]
    taus = CM4IR_TAUS[(250, 0.2)]  # the printed schedule (4 decimals)
    outs = {}
    for inj in (0, 1):
        prior = Shrink(kind)
        outs[inj] = CM4IR(prior, progress=False, deltas=deltas, injection_type=inj)(
            y, op, _sig(0.1), torch.Generator().manual_seed(0)
        )
        for (level, scalings), tau, d in zip(prior.calls, taus, deltas, strict=True):
            assert float(level) == pytest.approx((1 + d) * tau, abs=1e-4)  # delta always enters the level
            assert scalings == (pytest.approx(tau, abs=5e-5) if kind == "consistency" and inj == 0 else None)
    if kind == "mmse":  # "and beyond": an MMSE prior is called at (1 + delta) tau for both types
        torch.testing.assert_close(outs[0], outs[1])
    else:  # the types differ only through the boundary scalings
        assert not torch.allclose(outs[0], outs[1])
        zero = [
            CM4IR(Shrink(kind), progress=False, injection_type=i)(y, op, _sig(0.1), torch.Generator().manual_seed(0))
            for i in (0, 1)
        ]
        torch.testing.assert_close(zero[0], zero[1])


def _median_reference(x, holes, r0=2):
    cur = x.masked_fill(holes, float("nan"))
    r = r0
    while torch.isnan(cur).any():
        new = cur.clone()
        for b, c, i, j in torch.nonzero(torch.isnan(cur)).tolist():
            win = cur[b, c, max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1]
            new[b, c, i, j] = torch.nanmedian(win)
        cur, r = new, r + 1
    return cur


def test_median_fill():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 20, 24, generator=g)
    holes = torch.rand(2, 1, 20, 24, generator=g) < 0.8
    holes[0, :, 3:17, 4:20] = True  # a big hole needs several growing passes
    out = median_fill(x, holes)
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out[~holes.expand_as(x)], x[~holes.expand_as(x)], rtol=0, atol=0)
    torch.testing.assert_close(out, _median_reference(x, holes.expand_as(x)))


def test_unobserved_mask_and_init_fill():
    mask = (torch.arange(16) % 3 != 0).double()
    op = MatrixOperator(torch.eye(16, dtype=torch.float64)[mask.bool()], (1, 4, 4))
    holes = unobserved_mask(op, (1, 1, 4, 4), dtype=torch.float64)
    assert torch.equal(holes.flatten(), mask == 0)


def test_noise_injection_variance():
    """Unguided Gaussian toy x0 ~ N(0, v), x = x0 + tau eps, x0_hat = v x / (v + tau^2): z_hat_minus has variance
    tau^2 / (v + tau^2) (~1 for v << tau^2), so Var(x_next - x0_hat) = tau'^2 (eta^2 + (1 - eta^2) tau^2 / (v +
    tau^2)) for every eta, and x_next is anti-correlated with eps (the reversed noise)."""
    g = torch.Generator().manual_seed(0)
    n, v, tau, tau_next = 200_000, 0.002, 0.6, 0.3
    x0 = math.sqrt(v) * torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    x = x0 + tau * eps
    x0_hat = v * x / (v + tau**2)
    for eta in (0.0, 0.1, 0.5, 1.0):
        out = inject_noise(x0_hat, (x0_hat - x) / tau, tau_next, eta, g) - x0_hat
        expected = tau_next**2 * (eta**2 + (1 - eta**2) * tau**2 / (v + tau**2))
        assert float(out.var()) == pytest.approx(expected, rel=0.02)
        assert float(out.var()) == pytest.approx(tau_next**2, rel=0.03)
        if eta < 1:
            assert float(torch.corrcoef(torch.stack([out.flatten(), eps.flatten()]))[0, 1]) < -0.5


def test_presets_and_pd():
    assert len([n for n in CM4IR.presets if not n.startswith("tuned-")]) == 17  # the published table
    p = CM4IR.preset("bedroom-sr4-0.05")
    assert "LSUN Bedroom, SR x4 bicubic, sigma_y 0.05" in p.description and "issue #3" in p.description
    assert p.params["deltas"] == [0, 0.3, 0.05, 0.1] and (p.params["iN"], p.params["gamma"]) == (250, 0.2)
    for name, preset in CM4IR.presets.items():
        params = dict(preset.params)
        s = CM4IR(Shrink(), steps=params.pop("steps"), **params)
        steps = 4 if not name.startswith("tuned-") else preset.params["steps"]  # the paper's N = 4
        assert len(s.taus) == steps and s.total_nfe() == steps, name
    assert CM4IR.pd_params(0.0) == {"eta": pytest.approx(0.1), "delta_scale": 1.0}
    assert CM4IR.pd_params(1.0) == {"eta": pytest.approx(0.9), "delta_scale": 0.0}


# ----- real operators and exact Gaussian problems -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["blur", "inpaint"])
def test_noiseless_output_satisfies_measurements(kind):
    p = gaussian_problem(kind, sigma_y=0.0, size=16)
    out = CM4IR(p.prior, progress=False)(p.y, p.operator, p.sigma, torch.Generator().manual_seed(0))
    assert float((p.operator.A(out) - p.y).abs().max()) < 1e-4


def test_noiseless_output_satisfies_measurements_bicubic_sr():
    from zsir.operators.separable import BicubicSR

    p = gaussian_problem("identity", sigma_y=0.0, size=16)
    op = BicubicSR(2)
    y = op.A(p.x_star)
    out = CM4IR(p.prior, progress=False)(y, op, p.sigma, torch.Generator().manual_seed(0))
    assert float((op.A(out) - y).abs().max()) < 1e-4


@pytest.mark.parametrize("kind", ["inpaint", "blur"])
def test_samples_average_towards_the_posterior_mean(kind):
    """CM4IR is not an exact posterior sampler (4 steps, last output an MMSE estimate at tau_1): with a schedule
    ending near sigma_y (iN 100, gamma 0.03: tau_1 = 0.15) and the Tikhonov back-projection of the deblurring
    presets (zeta = 3), the average of 32 samples is within 25% of the exact posterior mean (measured ~0.17-0.20),
    closer than the regularised pseudo-inverse of y (~0.4-0.55)."""
    K = 32
    p = gaussian_problem(kind, sigma_y=0.1, size=8)
    s = CM4IR(p.prior, progress=False, iN=100, gamma=0.03, zeta=3.0)
    out = s(p.y.repeat(K, 1, 1, 1), p.operator, p.sigma.repeat(K, 1, 1, 1), torch.Generator().manual_seed(0))
    err = posterior_mean_error(out.unsqueeze(1), p.post_mean)
    assert err < 0.25
    assert err < relative_error(p.operator.pinv(p.y, 0.01), p.post_mean)


@pytest.mark.parametrize("schedule", ["constant", "tau"])
def test_reg_schedule_by_hand(schedule):
    """Four steps with eta = 0 against dense algebra: step k back-projects with zeta sigma_y^2 (constant) or
    zeta sigma_y^2 / tau_{k-1}^2 (tau), tau_{k-1} being the level the step hands on to."""
    taus = CM4IR_TAUS[(250, 0.20)]  # iN 250, gamma 0.2 (the default), from the specification
    g = torch.Generator().manual_seed(3)
    M = (
        torch.diag(torch.logspace(0, -2, 16, dtype=torch.float64))[:12]
        @ torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0]
    )
    op = MatrixOperator(M, (1, 4, 4))
    x = torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64) * 0.5
    sigma, zeta, v = 0.2, 0.5, 0.25
    y = op.A(x)
    y = y + sigma * torch.randn(y.shape, generator=g, dtype=torch.float64)
    proj = lambda r, eta: M.T @ torch.linalg.solve(M @ M.T + eta * torch.eye(12, dtype=torch.float64), r)  # noqa: E731
    yv = y.flatten()
    eta_reg = zeta * sigma**2
    z0 = torch.randn((1, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.float32).double().flatten()
    xk = proj(yv, eta_reg) + taus[0] * z0
    for k in range(3):
        x0 = (v * xk / (v + taus[k] ** 2)).clamp(-1, 1)
        z_minus = (x0 - xk) / taus[k]
        reg = eta_reg / taus[k + 1] ** 2 if schedule == "tau" else eta_reg
        xk = x0 - proj(M @ x0 - yv, reg) + taus[k + 1] * z_minus
    expected = (v * xk / (v + taus[3] ** 2)).clamp(-1, 1)

    def run(reg_schedule):
        s = CM4IR(Shrink(), progress=False, eta=0.0, zeta=zeta, median_fill=False, reg_schedule=reg_schedule)
        return s(y, op, _sig(sigma), torch.Generator().manual_seed(0)).flatten()

    assert relative_error(run(schedule), expected) < 2e-3
    assert relative_error(run("tau" if schedule == "constant" else "constant"), expected) > 2e-2
