"""The Prior base class: sigma handling, padding to a multiple, tiling, size warning, timestep lookup."""

import warnings

import pytest
import torch

from zsir.priors.base import Prior
from zsir.samplers.schedules import ddpm_linear_alphas_cumprod


class ShrinkPrior(Prior):
    """x0 = x / (1 + sigma^2): the exact denoiser of N(0, I); records the shapes it is called with."""

    multiple = 8

    def __init__(self, tile_size=None):
        super().__init__()
        self.tile_size = tile_size
        self.calls = []

    def _denoise(self, x, sigma, **kwargs):
        self.calls.append((tuple(x.shape), sigma.flatten().tolist()))
        return x / (1 + sigma**2)


def test_denoise_pads_to_multiple_and_crops_back():
    p = ShrinkPrior()
    x = torch.randn(2, 3, 13, 10)
    out = p.denoise(x, torch.tensor([0.5, 1.0]))
    assert out.shape == x.shape
    assert p.calls[0][0] == (2, 3, 16, 16)
    torch.testing.assert_close(out[1], x[1] / 2.0)


def test_tiling_matches_untiled_for_a_pointwise_denoiser():
    x = torch.randn(1, 3, 70, 90, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = ShrinkPrior().denoise(x, 0.7)
    tiled = ShrinkPrior(tile_size=32)
    out = tiled.denoise(x, 0.7)
    assert len(tiled.calls) > 4
    torch.testing.assert_close(out, ref)


def test_sigma_validation_and_channel_check():
    p = ShrinkPrior()
    with pytest.raises(ValueError, match="sigma: expected a float or 2 values"):
        p.denoise(torch.zeros(2, 3, 8, 8), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 3, H, W\)"):
        p.denoise(torch.zeros(2, 1, 8, 8), 0.1)


def test_size_warning_is_emitted_once():
    p = ShrinkPrior()
    p.train_size = (16, 16)
    with pytest.warns(UserWarning, match="trained on 16x16"):
        p.denoise(torch.zeros(1, 3, 8, 8), 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.denoise(torch.zeros(1, 3, 8, 8), 0.1)


def test_timestep_is_nearest_in_ve_sigma():
    p = ShrinkPrior()
    p.alphas_cumprod = torch.from_numpy(ddpm_linear_alphas_cumprod())
    table = p.sigma_table()
    assert p.timestep(table[412]).item() == 412
    assert p.timestep(torch.tensor([0.0, 1e4])).tolist() == [0, 999]
    with pytest.raises(AttributeError):
        ShrinkPrior().timestep(0.1)
