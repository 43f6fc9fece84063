"""Noise models in [0, 1] image units, seeded determinism and degrade()."""

from __future__ import annotations

import pytest
import torch

from zsir.operators import AveragePoolSR, GaussianNoise, Inpainting, PoissonNoise, degrade, random_mask


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_std_in_image_units():
    y = torch.full((2, 3, 64, 64), 0.5, dtype=torch.float64)
    r = GaussianNoise(0.1)(y, generator=gen(0)) - y
    assert float(r.std()) == pytest.approx(0.1, rel=0.03)
    assert abs(float(r.mean())) < 0.005


def test_gaussian_noise_per_sample_sigma():
    y = torch.zeros(2, 1, 64, 64)
    r = GaussianNoise(torch.tensor([0.0, 0.2]))(y, generator=gen(1))
    assert float(r[0].abs().max()) == 0.0
    assert float(r[1].std()) == pytest.approx(0.2, rel=0.05)
    r = GaussianNoise([0.05, 0.1])(y, generator=gen(1))
    assert float(r[1].std() / r[0].std()) == pytest.approx(2.0, rel=0.1)


def test_gaussian_noise_seeded_and_dtype_independent(device):
    y = torch.zeros(1, 3, 8, 8, device=device)
    noise = GaussianNoise(0.05)
    a = noise(y, generator=gen(3))
    assert a.device.type == device.type
    assert torch.equal(a, noise(y, generator=gen(3)))
    assert not torch.equal(a, noise(y, generator=gen(4)))
    torch.testing.assert_close(noise(y.double(), generator=gen(3)).float(), a)


def test_poisson_noise_mean_and_variance():
    x = torch.full((4, 3, 64, 64), 0.3, dtype=torch.float64)
    y = PoissonNoise(0.01)(x, generator=gen(5))  # 100 photons at white: mean 0.3, variance 0.01 * 0.3
    assert float(y.mean()) == pytest.approx(0.3, rel=0.01)
    assert float(y.var()) == pytest.approx(0.003, rel=0.05)
    assert torch.equal(y, PoissonNoise(0.01)(x, generator=gen(5)))
    assert y.dtype == torch.float64 and (y >= 0).all()


def test_degrade_applies_operator_then_noise_and_keeps_holes_zero():
    x = torch.rand(2, 3, 8, 8, generator=gen(6))
    op = AveragePoolSR(2)
    torch.testing.assert_close(degrade(x, op), op.A(x))
    y = degrade(x, op, GaussianNoise(0.05), generator=gen(7))
    torch.testing.assert_close(y, GaussianNoise(0.05)(op.A(x), generator=gen(7)))
    mask = random_mask((8, 8), 0.5, gen(8))
    y = degrade(x, Inpainting(mask), GaussianNoise(0.1), generator=gen(9))
    assert (y[:, :, ~mask] == 0).all() and (y[:, :, mask] != x[:, :, mask]).all()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: GaussianNoise(1.5), r"sigma: expected values in \[0.0, 1.0\]"),
        (lambda: GaussianNoise(-0.1), r"sigma: expected values in"),
        (lambda: GaussianNoise([0.1, 0.2])(torch.zeros(3, 1, 2, 2)), r"sigma: expected a float or 3 values"),
        (lambda: PoissonNoise(0.0), r"gain: expected a positive finite float"),
    ],
)
def test_noise_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
