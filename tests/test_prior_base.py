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


def _network_priors():
    """Network priors of every kind on the CPU: the built-in prior, a tiny ADM-style diffusers UNet (attention at
    8x8), a tiny NDR-Restore denoiser and FFDNet (random weights)."""
    import zsir
    from zsir.models.ffdnet import FFDNet
    from zsir.models.ndr import NDRRestore
    from zsir.priors.denoiser import DenoiserPrior
    from zsir.priors.diffusion import DiscreteVPPrior

    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=16, norm_num_groups=8,
    )  # fmt: skip
    yield zsir.load_prior("builtin")
    yield DiscreteVPPrior(unet, ddpm_linear_alphas_cumprod(), multiple=2, name="unet")
    yield DenoiserPrior(NDRRestore("tiny"), sigma_max=1.0, name="ndr")
    yield DenoiserPrior(FFDNet(), sigma_max=1.0, multiple=2, name="ffdnet")


def test_channels_last_gives_the_contiguous_output_and_only_by_default_on_cuda():
    x = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for prior in _network_priors():
        assert prior.uses_channels_last("cuda") and not prior.uses_channels_last("cpu"), prior.name
        with torch.no_grad():
            ref = prior.denoise(x, 0.4)
            prior.channels_last = True
            out = prior.denoise(x, 0.4)
        conv = next(m for m in prior.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last), prior.name
        assert out.is_contiguous() and not ref.is_inference()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5, msg=prior.name)
        prior.channels_last = False
        with torch.no_grad():
            torch.testing.assert_close(prior.denoise(x, 0.4), ref, rtol=1e-4, atol=1e-5, msg=prior.name)
        assert conv.weight.is_contiguous(), prior.name


def test_channels_last_does_not_apply_to_priors_without_convolutions():
    from zsir.priors.denoiser import DenoiserPrior

    assert not DenoiserPrior(lambda x, s: x, sigma_max=1.0).uses_channels_last("cuda")
