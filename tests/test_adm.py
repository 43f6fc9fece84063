"""OpenAI guided-diffusion / consistency-model checkpoints -> diffusers UNet2DModel conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from zsir.priors import ADMPrior, CheckpointError, DiscreteVPPrior
from zsir.priors.adm import (
    OPENAI_CONFIGS,
    convert_openai_state_dict,
    load_openai_unet,
    openai_key_pairs,
    openai_unet_config,
)
from zsir.priors.diffusion import ddpm_linear_alphas_cumprod

# Tiny ADM: 16 px, channels (32, 64), attention at 8x8 (level 1), head dim 16 -> 4 heads at 64 channels.
TINY = openai_unet_config(
    image_size=16, num_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
    num_head_channels=16,
)  # fmt: skip

# guided-diffusion module names (ResBlock / AttentionBlock attributes), written out independently of zsir.
RES_NAMES = {
    "in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2",
    "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
}  # fmt: skip


def to_openai(state: dict, config: dict, layout: str = "legacy") -> dict:
    """Inverse of the key map: a diffusers state dict in OpenAI layout, qkv merged head-major (or chunked)."""
    d = config["attention_head_dim"]
    out = {}
    for src, dst, kind in openai_key_pairs(config):
        names = {"": ""} if kind == "plain" else RES_NAMES if kind == "res" else {"norm": "group_norm"}
        for a, b in names.items():
            for p in ("weight", "bias"):
                key = f"{dst}.{b}.{p}" if b else f"{dst}.{p}"
                if key in state:
                    out[f"{src}.{a}.{p}" if a else f"{src}.{p}"] = state[key]
        if kind != "attn":
            continue
        for p in ("weight", "bias"):
            q, k, v = (state[f"{dst}.{n}.{p}"] for n in ("to_q", "to_k", "to_v"))
            c = q.shape[0]
            qkv = torch.stack([q, k, v])  # (3, C, ...) = (3, heads, d, ...)
            if layout == "legacy":
                qkv = qkv.reshape(3, c // d, d, *q.shape[1:]).transpose(0, 1)  # (heads, 3, d, ...)
            qkv = qkv.reshape(3 * c, *q.shape[1:])
            out[f"{src}.qkv.{p}"] = qkv[..., None] if p == "weight" else qkv
            proj = state[f"{dst}.to_out.0.{p}"]
            out[f"{src}.proj_out.{p}"] = proj[..., None] if p == "weight" else proj
    return out


def tiny_unet(config=TINY, seed=0) -> UNet2DModel:
    torch.manual_seed(seed)
    unet = UNet2DModel(**config)
    with torch.no_grad():  # diffusers zero-inits nothing here, but make every tensor clearly non-trivial
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def openai_attention(x: torch.Tensor, sd: dict, prefix: str, heads: int) -> torch.Tensor:
    """Reference guided-diffusion AttentionBlock with QKVAttentionLegacy (written from the MIT code's maths)."""
    B, C, H, W = x.shape
    h = x.reshape(B, C, -1)
    h = F.group_norm(h, 32, sd[f"{prefix}.norm.weight"], sd[f"{prefix}.norm.bias"], eps=1e-5)
    qkv = F.conv1d(h, sd[f"{prefix}.qkv.weight"], sd[f"{prefix}.qkv.bias"])
    L, d = qkv.shape[-1], C // heads
    q, k, v = qkv.reshape(B * heads, 3 * d, L).split(d, dim=1)
    scale = 1 / math.sqrt(math.sqrt(d))
    w = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(B, C, L)
    return x + F.conv1d(a, sd[f"{prefix}.proj_out.weight"], sd[f"{prefix}.proj_out.bias"]).reshape(B, C, H, W)


def test_converted_attention_matches_guided_diffusion_legacy_reference():
    sd = to_openai(tiny_unet().state_dict(), TINY)
    x = torch.randn(2, 64, 4, 4, generator=torch.Generator().manual_seed(1))
    ref = openai_attention(x, sd, "middle_block.1", heads=4)

    right, wrong = UNet2DModel(**TINY).eval(), UNet2DModel(**TINY).eval()
    right.load_state_dict(convert_openai_state_dict(sd, TINY, "legacy"))
    wrong.load_state_dict(convert_openai_state_dict(sd, TINY, "chunk"))  # loads silently, but is wrong
    with torch.no_grad():
        torch.testing.assert_close(right.mid_block.attentions[0](x), ref, rtol=1e-4, atol=1e-5)
        assert (wrong.mid_block.attentions[0](x) - ref).abs().max() > 1e-3


def test_chunk_layout_round_trip_for_consistency_checkpoints():
    unet = tiny_unet()
    sd = to_openai(unet.state_dict(), TINY, layout="chunk")
    conv = convert_openai_state_dict(sd, TINY, "chunk")
    for key, value in unet.state_dict().items():
        torch.testing.assert_close(conv[key], value, rtol=0, atol=0)


def test_full_round_trip_and_safetensors_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSIR_CACHE", str(tmp_path / "cache"))
    unet = tiny_unet()
    ckpt = tmp_path / "tiny_adm.pt"
    torch.save(to_openai(unet.state_dict(), TINY), ckpt)

    loaded = load_openai_unet(ckpt, TINY)
    for key, value in unet.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    cached = list((tmp_path / "cache" / "converted").glob("tiny_adm-*/diffusion_pytorch_model.safetensors"))
    assert len(cached) == 1

    def boom(*a, **k):
        raise AssertionError("the second load must come from the safetensors cache")

    monkeypatch.setattr("zsir.priors.adm.convert_openai_state_dict", boom)
    again = load_openai_unet(ckpt, TINY)
    for key, value in unet.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)


def test_adm_prior_equals_discrete_vp_prior_on_the_original_network(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSIR_CACHE", str(tmp_path / "cache"))
    unet = tiny_unet()
    ckpt = tmp_path / "tiny.pt"
    torch.save({"state_dict": to_openai(unet.state_dict(), TINY)}, ckpt)  # wrapped dicts are unwrapped
    prior = ADMPrior.from_openai(ckpt, TINY, cache=False)
    ref = DiscreteVPPrior(unet, ddpm_linear_alphas_cumprod(dtype=np.float64), clip=False, multiple=2)
    assert prior.alphas_cumprod.dtype == torch.float64 and prior.alphas_cumprod.numel() == 1000
    assert prior.sigma_min == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-9)
    assert prior.train_size == (16, 16) and prior.multiple == 2
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.05, 3.0])
    with torch.no_grad():
        torch.testing.assert_close(prior.denoise(x, sigma), ref.denoise(x, sigma).clamp(-1, 1))


def test_named_configs_cover_every_parameter_and_ffhq_matches_published_count():
    for name, (cfg, layout) in OPENAI_CONFIGS.items():
        with torch.device("meta"):
            unet = UNet2DModel(**cfg)
        state = unet.state_dict()
        conv = convert_openai_state_dict(to_openai(state, cfg, layout), cfg, layout)
        assert set(conv) == set(state), name
        assert all(conv[k].shape == v.shape for k, v in state.items()), name
        if name == "ffhq256":
            assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 2) == 93.56
    # guided-diffusion indices for FFHQ (1 res block per level, attention at 16x16 = level 4), derived by hand
    pairs = {src: dst for src, dst, _ in openai_key_pairs(OPENAI_CONFIGS["ffhq256"][0])}
    assert pairs["input_blocks.2.0"] == "down_blocks.0.downsamplers.0"
    assert pairs["input_blocks.9.1"] == "down_blocks.4.attentions.0"
    assert pairs["input_blocks.11.0"] == "down_blocks.5.resnets.0"
    assert pairs["output_blocks.1.1"] == "up_blocks.0.upsamplers.0"
    assert pairs["output_blocks.3.2"] == "up_blocks.1.upsamplers.0"
    assert pairs["output_blocks.11.0"] == "up_blocks.5.resnets.1"
    assert "output_blocks.12.0" not in pairs and "input_blocks.12.0" not in pairs


def test_mismatching_and_corrupt_checkpoints_name_file_and_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSIR_CACHE", str(tmp_path / "cache"))
    sd = to_openai(tiny_unet().state_dict(), TINY)
    sd.pop("out.2.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["input_blocks.0.0.weight"] = torch.zeros(32, 3, 5, 5)
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    with pytest.raises(CheckpointError) as info:
        load_openai_unet(bad, TINY)
    msg = str(info.value)
    assert "bad.pt" in msg and "conv_out.bias" in msg and "extra.weight" in msg
    assert "conv_in.weight: checkpoint (32, 3, 5, 5) vs model (32, 3, 3, 3)" in msg

    good = tmp_path / "good.pt"
    torch.save(to_openai(tiny_unet().state_dict(), TINY), good)
    data = good.read_bytes()
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt.*truncated or corrupt"):
        load_openai_unet(trunc, TINY)
    with pytest.raises(ValueError, match="config: expected one of"):
        load_openai_unet(good, "ffhq512")
