"""Prior adapters (diffusers VP, consistency, bring-your-own denoiser) and the load_prior registry, offline."""

from __future__ import annotations

import math
import sys
import types
import warnings

import pytest
import torch
from diffusers import (
    CMStochasticIterativeScheduler,
    ConsistencyModelPipeline,
    DDPMPipeline,
    DDPMScheduler,
    UNet2DModel,
)

import zsir
from zsir.priors import (
    CheckpointError,
    ConsistencyPrior,
    DenoiserPrior,
    DiffusersPrior,
    Prior,
    PriorDownloadError,
    list_priors,
    load_prior,
)


def tiny_unet(out_channels=3, num_class_embeds=None, seed=0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16, in_channels=3, out_channels=out_channels, block_out_channels=(32, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, num_class_embeds=num_class_embeds,
    ).eval()  # fmt: skip


def save_ddpm(path, prediction_type="epsilon", out_channels=3):
    unet = tiny_unet(out_channels)
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path)
    return unet, scheduler


def save_cm(path, num_class_embeds=None):
    unet = tiny_unet(num_class_embeds=num_class_embeds)
    ConsistencyModelPipeline(unet=unet, scheduler=CMStochasticIterativeScheduler()).save_pretrained(path)
    return unet


def reference_x0(unet, scheduler, x, sigma, prediction_type):
    """Independent VP -> VE Tweedie estimate at the nearest timestep (float64 bookkeeping)."""
    abar = scheduler.alphas_cumprod.double()
    table = ((1 - abar) / abar).sqrt()
    out = []
    for i, s in enumerate(sigma.tolist()):
        t = int((table - s).abs().argmin())
        a = abar[t].item()
        x_vp = math.sqrt(a) * x[i : i + 1]
        with torch.no_grad():
            pred = unet(x_vp, torch.tensor([t])).sample[:, :3]
        if prediction_type == "epsilon":
            x0 = (x_vp - math.sqrt(1 - a) * pred) / math.sqrt(a)
        elif prediction_type == "v_prediction":
            x0 = math.sqrt(a) * x_vp - math.sqrt(1 - a) * pred
        else:
            x0 = pred
        out.append(x0)
    return torch.cat(out)


@pytest.mark.parametrize(
    "prediction_type,out_channels", [("epsilon", 3), ("epsilon", 6), ("v_prediction", 3), ("sample", 3)]
)
def test_diffusers_prior_is_tweedie_consistent(tmp_path, prediction_type, out_channels):
    unet, scheduler = save_ddpm(tmp_path / "pipe", prediction_type, out_channels)
    prior = DiffusersPrior.from_pretrained(tmp_path / "pipe", clip=False)
    assert prior.kind == "mmse" and prior.prediction_type == prediction_type
    table = ((1 - scheduler.alphas_cumprod.double()) / scheduler.alphas_cumprod.double()).sqrt()
    assert prior.sigma_min == pytest.approx(table[0].item()) and prior.sigma_max == pytest.approx(table[-1].item())
    x = 2 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.37, 2.9])  # per sample, between table entries
    with torch.no_grad():
        got = prior.denoise(x, sigma)
    torch.testing.assert_close(got, reference_x0(unet, scheduler, x, sigma, prediction_type), rtol=1e-4, atol=1e-4)
    clipped = DiffusersPrior.from_pretrained(tmp_path / "pipe")
    with torch.no_grad():
        torch.testing.assert_close(clipped.denoise(x, sigma), got.clamp(-1, 1))


def test_diffusers_prior_pads_odd_sizes_keeps_dtype_and_passes_gradients(tmp_path):
    save_ddpm(tmp_path / "pipe")
    prior = DiffusersPrior.from_pretrained(tmp_path / "pipe")
    assert prior.multiple == 2 and prior.train_size == (16, 16)
    seen = []
    prior.net.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    x = torch.randn(1, 3, 13, 11, dtype=torch.float64, requires_grad=True)
    with pytest.warns(UserWarning, match="trained on 16x16"):
        out = prior.denoise(x, 0.5)
    assert out.shape == x.shape and out.dtype == torch.float64 and seen == [(1, 3, 14, 12)]
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.net.parameters())


def test_load_prior_dispatches_folders_and_casts(tmp_path):
    save_ddpm(tmp_path / "ddpm")
    save_cm(tmp_path / "cm")
    assert isinstance(load_prior(tmp_path / "ddpm"), DiffusersPrior)
    cm = zsir.load_prior(str(tmp_path / "cm"), dtype=torch.float64)
    assert isinstance(cm, ConsistencyPrior) and cm.dtype == torch.float64
    # a bare UNet2DModel folder with scheduler_config.json beside it
    unet, scheduler = tiny_unet(), DDPMScheduler()
    unet.save_pretrained(tmp_path / "bare")
    scheduler.save_pretrained(tmp_path / "bare")
    assert isinstance(load_prior(tmp_path / "bare"), DiffusersPrior)
    with pytest.raises(ValueError, match="consistency model"):
        DiffusersPrior.from_pretrained(tmp_path / "cm")


def cm_reference(unet, x, sigma_t, sigma_s, labels=None):
    """f = clamp(c_skip x + c_out F(c_in x, 250 ln sigma_t)), scalings at sigma_s (sigma_min 0.002, sd 0.5)."""
    s = sigma_s.reshape(-1, 1, 1, 1)
    c_skip = 0.25 / ((s - 0.002) ** 2 + 0.25)
    c_out = (s - 0.002) * 0.5 / (s**2 + 0.25).sqrt()
    c_in = 1 / (s**2 + 0.25).sqrt()
    with torch.no_grad():
        F = unet(c_in * x, 250 * torch.log(sigma_t), class_labels=labels).sample
    return (c_skip * x + c_out * F).clamp(-1, 1)


def test_consistency_prior_scalings_and_fractional_negative_times(tmp_path):
    unet = save_cm(tmp_path / "cm")
    prior = ConsistencyPrior.from_pretrained(tmp_path / "cm")
    assert (prior.kind, prior.sigma_min, prior.sigma_max, prior.sigma_data) == ("consistency", 0.002, 80.0, 0.5)
    times = []
    prior.net.register_forward_pre_hook(lambda m, args: times.append(args[1].clone()))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.13, 1.7])
    with torch.no_grad():
        out = prior.denoise(x, sigma)
    assert times[0].dtype.is_floating_point and times[0].shape == (2,)
    torch.testing.assert_close(times[0], 250 * torch.log(sigma))  # -510.04..., not truncated to -510
    assert times[0][0] != times[0][0].round()
    torch.testing.assert_close(out, cm_reference(unet, x, sigma, sigma), rtol=1e-5, atol=1e-5)
    # CM4IR injection type 0: network time at (1 + delta) tau, scalings at tau
    tau = torch.tensor([0.1, 1.2])
    with torch.no_grad():
        dec = prior.denoise(x, 1.5 * tau, scalings_sigma=tau)
    torch.testing.assert_close(dec, cm_reference(unet, x, 1.5 * tau, tau), rtol=1e-5, atol=1e-5)
    assert (dec - out).abs().max() > 1e-4


def test_consistency_prior_class_labels(tmp_path):
    unet = save_cm(tmp_path / "cm10", num_class_embeds=10)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        unlabeled = ConsistencyPrior.from_pretrained(tmp_path / "cm10")
        with pytest.raises(ValueError, match="class-conditional"):
            unlabeled.denoise(x, 0.5)
        with pytest.raises(ValueError, match=r"class_labels: expected values in \[0, 10\)"):
            unlabeled.denoise(x, 0.5, class_labels=12)
        prior = ConsistencyPrior.from_pretrained(tmp_path / "cm10", class_labels=3)
        sigma = torch.tensor([0.5, 0.5])
        torch.testing.assert_close(prior.denoise(x, 0.5), cm_reference(unet, x, sigma, sigma, torch.tensor([3, 3])))
        per_call = prior.denoise(x, 0.5, class_labels=[3, 7])
        torch.testing.assert_close(per_call, cm_reference(unet, x, sigma, sigma, torch.tensor([3, 7])))
        assert (per_call[1] - prior.denoise(x, 0.5)[1]).abs().max() > 1e-5


def test_denoiser_prior_converts_units():
    calls = []

    def net(x, s):  # known affine map in [0, 1] units
        calls.append((x.min().item(), x.max().item(), s.flatten().tolist()))
        return 0.5 * x + s

    prior = DenoiserPrior(net, sigma_max=0.2, name="affine")
    assert prior.sigma_max == pytest.approx(0.4) and prior.kind == "mmse"
    x = torch.tensor([-1.0, 0.0, 1.0]).reshape(1, 3, 1, 1).repeat(2, 1, 4, 4)
    out = prior.denoise(x, torch.tensor([0.1, 0.3]))
    assert calls[0][:2] == (0.0, 1.0)
    assert calls[0][2] == pytest.approx([0.05, 0.15])
    expected = 2 * (0.5 * (x + 1) / 2 + torch.tensor([0.05, 0.15]).reshape(2, 1, 1, 1)) - 1
    torch.testing.assert_close(out, expected)

    class Scale(torch.nn.Module):  # a module with a parameter: inputs are cast to its dtype and back
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

        def forward(self, x, s):
            assert x.dtype == s.dtype == torch.float64
            return self.w * x

    ident = DenoiserPrior(Scale(), sigma_max=1.0)
    xd = torch.randn(1, 3, 8, 8)
    out = ident.denoise(xd, 0.3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, xd)


def test_unknown_prior_lists_names_and_suggests():
    with pytest.raises(ValueError, match="known priors: .*bedroom-cm.*ffhq.*Did you mean 'ffhq'"):
        load_prior("ffhqq")


def test_offline_errors_name_file_source_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ZSIR_CACHE", str(tmp_path / "zc"))
    with pytest.raises(PriorDownloadError) as info:
        load_prior("zsir-test-org/not-a-cached-model")
    msg = str(info.value)
    assert "model_index.json" in msg and "zsir-test-org/not-a-cached-model" in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(PriorDownloadError) as info:
        load_prior("imagenet")
    msg = str(info.value)
    assert "256x256_diffusion_uncond.pt" in msg and "openaipublic.blob.core.windows.net" in msg
    assert str(tmp_path / "zc" / "downloads" / "256x256_diffusion_uncond.pt") in msg


def test_corrupt_weights_in_a_pipeline_folder(tmp_path):
    save_ddpm(tmp_path / "pipe")
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors.*truncated or corrupt"):
        load_prior(tmp_path / "pipe")
    with pytest.raises(ValueError, match="config: loading the checkpoint"):
        load_prior(weights)


def test_builtin_loads_through_the_registry(monkeypatch):
    fake = types.ModuleType("zsir.models.builtin")
    fake.load_builtin_prior = lambda: DenoiserPrior(lambda x, s: x, sigma_max=0.5, name="builtin")
    monkeypatch.setitem(sys.modules, "zsir.models.builtin", fake)
    prior = load_prior("builtin", dtype=torch.float64)
    assert isinstance(prior, Prior) and prior.name == "builtin"


def test_list_priors_table(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSIR_CACHE", str(tmp_path))
    rows = {r["name"]: r for r in list_priors()}
    assert {"ffhq", "imagenet", "celebahq", "bedroom-cm", "cat-cm", "imagenet64-cm", "builtin"} <= set(rows)
    assert all(r["source"] and r["size"] and r["licence"] and isinstance(r["cached"], bool) for r in rows.values())
    assert rows["imagenet"]["cached"] is False
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "256x256_diffusion_uncond.pt").write_bytes(b"x")
    assert {r["name"]: r for r in list_priors()}["imagenet"]["cached"] is True


def test_load_prior_passes_prior_objects_through():
    prior = DenoiserPrior(torch.nn.Conv2d(3, 3, 1), sigma_max=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = load_prior(prior, dtype=torch.float64)
    assert out is prior and out.dtype == torch.float64
    with pytest.raises(TypeError, match="name_or_path"):
        load_prior(3)
