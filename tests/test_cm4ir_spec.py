"""CM4IR against docs/samplers/cm4ir.md (from the paper and the official evaluation script): the preset table, the
tau table, the Tikhonov weight zeta sigma_y^2, the per-step noise estimate, the per-sample final output and the
median fill of the initialisation. Every expected value below is typed from the page, not the code."""

from __future__ import annotations

import pytest
import torch
from spec_values import CM4IR_TAUS

from zsir.operators import Inpainting, MatrixOperator
from zsir.priors.base import Prior
from zsir.samplers.cm4ir import CM4IR, median_fill

Z4 = (0.0, 0.0, 0.0, 0.0)  # "none (all 0)"
# docs/samplers/cm4ir.md, Presets: name -> (iN, gamma, zeta, deltas step1..4, injection type); eta 0.1, mu 1, N 4
SPEC = {
    "bedroom-sr4-0.025": (400, 0.7, 0, (0, 0.5, 0.1, 0), 0),
    "bedroom-deblur-0.025": (75, 0.01, 3, (0.1, 0, 0, 0.05), 0),
    "bedroom-inpaint80-0.025": (150, 0.2, 0, (0.1, 0.1, 0.8, 0.8), 1),
    "bedroom-inpaintletters-0.025": (150, 0.2, 0, (0.2, 0.3, 0.8, 0.8), 1),
    "bedroom-sr4-0.05": (250, 0.2, 0, (0, 0.3, 0.05, 0.1), 0),
    "bedroom-deblur-0.05": (150, 0.05, 1, (0.1, 0, 0, 0.05), 0),
    "bedroom-inpaint80-0.05": (150, 0.2, 0, (0.2, 0.3, 0.8, 0.8), 1),
    "bedroom-inpaint80-0": (150, 0.2, 0, (0.2, 0.1, 1.0, 1.0), 1),
    "cat-sr4-0.025": (400, 0.7, 0, (0, 0.3, 0, 0), 0),
    "cat-deblur-0.025": (125, 0.05, 4, Z4, 0),
    "cat-inpaint80-0.025": (150, 0.2, 0, (0, 0, 1.0, 1.0), 1),
    "cat-sr4-0.05": (250, 0.2, 0, (0.1, 0.1, 0, 0), 0),
    "cat-deblur-0.05": (250, 0.2, 1, Z4, 0),
    "cat-inpaint80-0.05": (150, 0.2, 0, (0, 0, 1.0, 1.0), 1),
    "imagenet64-sr2-0.01": (50, 0.01, 0, Z4, 0),  # no injection-type column: the default 0
    "imagenet64-sr2-0.025": (75, 0.02, 0, Z4, 0),
    "imagenet64-sr2-0.05": (100, 0.03, 0, Z4, 0),
}


class Rec(Prior):
    """Deterministic fake prior ``f(x) = a x + b`` (exceeds [-1, 1], so the clamp matters); records (x, sigma, f)."""

    sigma_min, sigma_max = 0.0, 80.0

    def __init__(self, kind="consistency", channels=1, a=2.5, b=0.4):
        super().__init__(channels=channels)
        self.kind, self.a, self.b, self.calls = kind, a, b, []

    def _denoise(self, x, sigma, **kw):
        out = self.a * x + self.b
        self.calls.append((x.clone(), float(sigma.flatten()[0]), out.clone()))
        return out


class RecOp(MatrixOperator):
    """MatrixOperator recording the regulariser ``eta`` of every ``pinv`` call."""

    def pinv(self, y, eta=0.0):
        self.etas = [*getattr(self, "etas", []), float(torch.as_tensor(eta).flatten()[0])]
        return super().pinv(y, eta)


def _sig(v):
    return torch.full((1, 1, 1, 1), float(v), dtype=torch.float64)


def _problem(scale=0.5, cls=MatrixOperator, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(10, 16, generator=g, dtype=torch.float64) / 4
    x = scale * torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    op = cls(M, (1, 4, 4))
    return op, op.A(x), M


def _bp(x0, y, M, eta_reg):
    """Hand back-projection x0 - M^T (M M^T + eta_reg I)^{-1} (M x0 - y) (docs/samplers/cm4ir.md)."""
    r = x0.flatten(1) @ M.T - y.flatten(1)
    corr = torch.linalg.solve(M @ M.T + eta_reg * torch.eye(M.shape[0], dtype=M.dtype), r.T).T @ M
    return x0 - corr.reshape(x0.shape)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_preset_matches_spec_table(name):
    assert {n for n in CM4IR.presets if not n.startswith("tuned-")} == set(SPEC)  # tuned-* presets sit beside them
    i_n, gamma, zeta, deltas, inj = SPEC[name]
    p = dict(CM4IR.presets[name].params)
    got = p["deltas"] if isinstance(p["deltas"], (list, tuple)) else [p["deltas"]] * 4
    assert (p["iN"], p["gamma"], p["zeta"], p["injection_type"]) == (i_n, pytest.approx(gamma), zeta, inj)
    assert [float(d) for d in got] == pytest.approx(list(deltas), abs=1e-12)
    assert (p["eta"], p["mu"], p["steps"]) == (pytest.approx(0.1), 1.0, 4)
    s = CM4IR(Rec(), progress=False, steps=p.pop("steps"), **p)
    assert s.taus == pytest.approx(CM4IR_TAUS[(i_n, gamma)], abs=6e-5)


@pytest.mark.parametrize(
    "name, sigma01, expected",
    [
        ("bedroom-deblur-0.025", 0.025, 0.0075),  # 3 * (2 * 0.025)^2
        ("cat-deblur-0.025", 0.025, 0.01),  # 4 * (2 * 0.025)^2
        ("bedroom-deblur-0.05", 0.05, 0.01),  # 1 * (2 * 0.05)^2
        ("bedroom-sr4-0.05", 0.05, 0.0),  # zeta 0: exact pseudo-inverse even with noise
    ],
)
def test_tikhonov_weight_is_zeta_sigma_model_squared(name, sigma01, expected):
    op, y, _ = _problem(cls=RecOp)
    p = dict(CM4IR.presets[name].params)
    CM4IR(Rec(), progress=False, steps=p.pop("steps"), **p)(y, op, _sig(2 * sigma01), torch.Generator().manual_seed(0))
    assert op.etas == pytest.approx([expected] * 4, rel=1e-9, abs=1e-15)  # init + 3 BP (noisy: no last BP)
    op.etas = []
    CM4IR(Rec(), progress=False, steps=p.pop("steps", 4), **p)(y, op, _sig(0.0), torch.Generator().manual_seed(0))
    assert op.etas == [0.0] * 5  # noiseless: eta_reg = 0 and a final exact BP


@pytest.mark.parametrize("inj", [0, 1])
def test_noise_estimate_uses_true_tau_clamped_pre_bp_x0(inj):
    """eta = 0: x_{k-1} = BP(clamp(f_k)) + tau_{k-1} (clamp(f_k) - x_k) / tau_k, recomputed from the recorded
    calls (the true tau and the clamped x0; the pre-BP x0, noise added to the post-BP point)."""
    op, y, M = _problem()
    sigma_y, zeta, deltas = 0.1, 2.0, [0.5, 0.3, 0.8, 0.2]
    prior = Rec()
    s = CM4IR(prior, progress=False, iN=250, gamma=0.2, deltas=deltas, injection_type=inj, eta=0.0, zeta=zeta)
    out = s(y, op, _sig(sigma_y), torch.Generator().manual_seed(0))
    taus, eta_reg = CM4IR_TAUS[(250, 0.2)], zeta * sigma_y**2
    assert len(prior.calls) == 4
    for k, (x, level, f) in enumerate(prior.calls):
        assert level == pytest.approx((1 + deltas[k]) * taus[k], abs=2e-4)
        assert float(f.abs().max()) > 1.0  # the clamp is active
        if k == 3:
            break
        x0 = f.clamp(-1, 1)
        expected = _bp(x0, y, M, eta_reg) + s.taus[k + 1] * (x0 - x) / s.taus[k]
        torch.testing.assert_close(prior.calls[k + 1][0], expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out, prior.calls[-1][2].clamp(-1, 1), rtol=0, atol=0)  # noisy: last clamped x0


def test_final_output_noiseless_is_unclamped_back_projection():
    op, y, M = _problem(scale=2.0)  # a large y: the projection onto A x = y leaves [-1, 1]
    prior = Rec()
    out = CM4IR(prior, progress=False, zeta=3.0)(y, op, _sig(0.0), torch.Generator().manual_seed(0))
    x0 = prior.calls[-1][2].clamp(-1, 1)
    torch.testing.assert_close(out, _bp(x0, y, M, 0.0), rtol=1e-9, atol=1e-9)
    assert float(out.abs().max()) > 1.0  # no final clamp
    assert float((op.A(out) - y).abs().max()) < 1e-4
    prior = Rec()
    out = CM4IR(prior, progress=False, zeta=3.0)(y, op, _sig(0.1), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, prior.calls[-1][2].clamp(-1, 1), rtol=0, atol=0)
    assert float((op.A(out) - y).abs().max()) > 1e-2


@pytest.mark.parametrize("fill", [True, False])
def test_median_fill_runs_for_inpainting(fill):
    """iN 0, gamma 0.01: tau_N ~ 0.015, so the first network input is x_init up to small noise."""
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.4 * torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)
    mask = torch.rand(8, 8, generator=g) > 0.5
    op = Inpainting(mask)
    y = op.A(x)
    prior = Rec(kind="mmse", channels=3, a=1.0, b=0.0)
    CM4IR(prior, progress=False, iN=0, gamma=0.01, median_fill=fill)(y, op, _sig(0.0), torch.Generator().manual_seed(1))
    x1, holes = prior.calls[0][0], (~mask).expand(1, 3, 8, 8)
    assert bool(holes.any()) and bool((~holes).any())
    ref = median_fill(y, holes) if fill else y
    assert float((x1 - ref).abs().max()) < 0.1
    if fill:
        assert float(x1[holes].min()) > 0.3  # no hole left at ~0
    else:
        assert float(x1[holes].abs().max()) < 0.1
