"""zsir.solve end to end: shapes, seeding, samples, result fields, parameter precedence and input errors."""

from __future__ import annotations

import math

import pytest
import torch

import zsir
from zsir.operators import LinearOperator
from zsir.priors.base import Prior
from zsir.samplers.rdmd import RDMD
from zsir.solve import resolve_params


class Tiny(Prior):
    """N(0.2, 0.25 I) on 3-channel [-1, 1] images (exact MMSE denoiser)."""

    kind, channels = "mmse", 3

    def _denoise(self, x, sigma, **kw):
        return 0.2 + 0.25 * (x - 0.2) / (0.25 + sigma**2)


def _setup(B=2):
    op = LinearOperator.from_function(lambda x: torch.nn.functional.avg_pool2d(x, 2), (3, 8, 8))
    x = torch.rand(B, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return op, op.A(x) + 0.05 * torch.randn(B, 3, 4, 4, generator=torch.Generator().manual_seed(1))


def _solve(**kw):
    op, y = _setup()
    args = {"prior": Tiny(), "sigma_y": 0.05, "steps": 6, "generator": 0, "progress": False} | kw
    return zsir.solve(y.clamp(0, 1), op, **args)


@pytest.mark.parametrize("sampler", ["rdmd", "cm4ir"])
def test_shape_and_range(sampler):
    out = _solve(sampler=sampler, steps=None if sampler == "cm4ir" else 6)
    assert out.shape == (2, 3, 8, 8) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_seeded_determinism_int_and_generator():
    a, b = _solve(generator=7), _solve(generator=7)
    c = _solve(generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert not torch.equal(a, _solve(generator=8))


def test_num_samples_and_result_fields():
    res = _solve(num_samples=3, return_result=True, zeta=0.5)
    assert res.samples.shape == (3, 2, 3, 8, 8) and torch.equal(res.x, res.samples[0])
    assert not torch.equal(res.samples[0], res.samples[1])
    assert res.nfe == 2 * 6 - 2 and res.sampler == "rdmd" and res.steps == 6 and res.seconds > 0
    assert res.params["zeta"] == 0.5 and res.params["lambda_"] == 20.0


def test_precedence_preset_pd_explicit():
    assert resolve_params(RDMD, "deblur", None, {})["zeta"] == 0.3
    p = resolve_params(RDMD, "deblur", 0.2, {})
    assert p["texture"] == pytest.approx(0.4) and p["tau"] == 0.5  # pd on top of the preset, which keeps its tau
    assert resolve_params(RDMD, "deblur", 0.2, {"texture": 0.9})["texture"] == 0.9  # explicit overrides pd
    assert resolve_params(RDMD, "deblur", None, {"tau": 0.9})["tau"] == 0.9  # explicit overrides the preset
    res = _solve(preset="sr", pd=0.25, steps=None, return_result=True)
    assert res.steps == 100 and res.params["texture"] == 0.5 and res.params["init"] == "bicubic"
    res = _solve(preset="sr", pd=0.25, texture=0.75, steps=3, return_result=True)
    assert res.steps == 3 and res.params["texture"] == 0.75


def test_unknown_sampler_lists_known_and_suggests():
    with pytest.raises(ValueError) as err:
        _solve(sampler="rdmdd")
    assert "rdmd" in str(err.value) and "cm4ir" in str(err.value) and "Did you mean 'rdmd'" in str(err.value)


@pytest.mark.parametrize("pd", [-0.1, 1.5, math.nan])
def test_pd_out_of_range(pd):
    with pytest.raises(ValueError, match="pd"):
        _solve(pd=pd)


@pytest.mark.parametrize("sigma_y", [-0.01, 1.5, math.nan])
def test_sigma_y_out_of_range(sigma_y):
    with pytest.raises(ValueError, match="sigma_y"):
        _solve(sigma_y=sigma_y)


def test_y_with_nan():
    op, y = _setup()
    y[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="y: contains NaN"):
        zsir.solve(y, op, prior=Tiny(), progress=False)


def test_wrong_operator_shape():
    op, _ = _setup()
    with pytest.raises(ValueError, match="y: expected shape"):
        zsir.solve(torch.rand(1, 3, 5, 5), op, prior=Tiny(), progress=False)


def test_unknown_hyperparameter():
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        _solve(lam=3.0)


def test_default_prior_is_the_builtin_prior():
    """prior=None runs the built-in prior (it ships with zsir): the same output as passing it by name."""
    op = LinearOperator.from_function(lambda x: torch.nn.functional.avg_pool2d(x, 2), (3, 64, 64))
    y = op.A(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    kw = {"sampler": "cm4ir", "steps": 1, "deltas": [0.0], "progress": False, "generator": 0, "return_result": True}
    res = zsir.solve(y, op, prior=None, **kw)
    ref = zsir.solve(y, op, prior="builtin", **kw)
    assert res.x.shape == (1, 3, 64, 64) and res.nfe == 1
    torch.testing.assert_close(res.x, ref.x, rtol=0, atol=0)
    # noiseless CM4IR ends with the exact projection onto A x = y (up to the final clamp to [0, 1])
    assert float((op.A(res.x) - y).abs().mean()) < 0.01
