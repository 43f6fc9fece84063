"""NDR-Restore: shapes, the CP contraction, gradient paths, the official loader and the training loop."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from zsir.models.data import PatchSampler, load_images
from zsir.models.ndr import LowRankTransform, NDRConfig, NDRRestore, cp_attention
from zsir.models.train import load_checkpoint, main, sample_sigma, training_loss

#: A reduced model with the full official key layout (4 levels, refinement, all DRL blocks; blind, BGR).
SMALL_OFFICIAL = NDRConfig.preset(
    "official",
    dim=8,
    num_blocks=(1, 1, 1, 1),
    heads=(1, 1, 2, 2),
    num_refinement_blocks=1,
    ndr_entries=4,
    ndr_dim=8,
    dq_dim=8,
    cp_rank=4,
    degrad_dim=8,
)


def _tiny(**kw) -> NDRRestore:
    torch.manual_seed(0)
    return NDRRestore("tiny", **kw)


# ----- architecture ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 13, 19), (2, 16, 8)])
def test_restore_pads_odd_sizes_and_keeps_shape(shape):
    model = _tiny().eval()
    b, h, w = shape
    x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(1))
    out = model.restore(x, sigma=0.1)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    out3 = model.restore(x[0], sigma=0.1)
    assert out3.shape == x[0].shape


def test_forward_checks_inputs():
    model = _tiny()
    with pytest.raises(ValueError, match="multiples of 2"):
        model(torch.rand(1, 3, 7, 8), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        model(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="x: expected"):
        model(torch.rand(1, 4, 8, 8), 0.1)
    with pytest.raises(ValueError, match="use_dq=True needs use_ndr"):
        NDRConfig.preset("lite", use_ndr=False)
    with pytest.raises(ValueError, match="unknown preset"):
        NDRConfig.preset("huge")


def test_official_config_matches_paper_size():
    cfg = NDRConfig.preset("official")
    assert (cfg.dim, cfg.num_blocks, cfg.heads, cfg.num_refinement_blocks) == (48, (4, 6, 6, 8), (1, 2, 4, 6), 3)
    assert (cfg.ndr_entries, cfg.ndr_dim, cfg.cp_rank, cfg.multiple) == (32, 128, 16, 8)


def test_denoiser_is_identity_at_zero_noise_and_plain_variant_has_no_ndr():
    model = _tiny().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    model = model.double()
    # EDM preconditioning: c_skip -> 1, c_out -> 0 as sigma -> 0
    assert torch.allclose(model(x, 1e-8), x, atol=1e-6)
    plain = NDRRestore("tiny", use_ndr=False, use_dq=False, use_di=False, use_degrad=False)
    names = [k for k, _ in plain.named_parameters()]
    assert not any("res_connect" in k or "degradation" in k for k in names)
    assert plain.degradation_net is None and plain.degradation_representations is None
    assert plain(torch.rand(1, 3, 8, 8), 0.2).shape == (1, 3, 8, 8)


def test_einsum_cp_equals_naive_5d():
    g = torch.Generator().manual_seed(3)
    B, R, C, H, W = 2, 5, 4, 6, 7
    c, h, w = (torch.rand(B, R, n, generator=g, dtype=torch.float64) for n in (C, H, W))
    naive = (c.view(B, R, C, 1, 1) * h.view(B, R, 1, H, 1) * w.view(B, R, 1, 1, W)).mean(1)
    assert torch.allclose(cp_attention(c, h, w), naive, atol=1e-12)
    # the module, against the official reshaping of its conv outputs (c index = r * C + channel)
    lrt = LowRankTransform(C, R, residual=False).double()
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    fc = lrt.conv_C(x).view(B, R, C, 1, 1)
    fh = lrt.conv_H(x).view(B, R, 1, H, 1)
    fw = lrt.conv_W(x).view(B, R, 1, 1, W)
    assert torch.allclose(lrt(x), x * (fc * fh * fw).mean(1), atol=1e-12)
    lrt.residual = True
    assert torch.allclose(lrt(x), x + x * (fc * fh * fw).mean(1), atol=1e-12)


@pytest.mark.parametrize("which", ["restore", "degrad"])
def test_gradients_reach_the_ndr_through_each_loss(which):
    model = _tiny()
    g = torch.Generator().manual_seed(4)
    clean = torch.rand(2, 3, 8, 8, generator=g)
    sigma = torch.full((2, 1, 1, 1), 0.2)
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    restored, maps = model.restore_with_maps(noisy, sigma)
    loss = (restored - clean).abs().mean() if which == "restore" else (model.degrade(clean, maps) - noisy).abs().mean()
    loss.backward()
    grad = model.degradation_representations.grad
    assert grad is not None and grad.abs().sum() > 0
    dq = model.restoration_net.res_connect1.degradation_recog.attn.qkv.weight.grad
    assert dq is not None and dq.abs().sum() > 0
    if which == "restore":  # the restoration loss never touches NDR-Degrad
        assert all(p.grad is None for p in model.degradation_net.parameters())


# ----- the official loader ----------------------------------------------------------------------------------------
def _official_state(model: NDRRestore) -> dict:
    """The model's tensors in the official model_L.pth layout (DataParallel prefix, NDR alias, legacy keys)."""
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    sd["module.restoration_net.dr"] = model.degradation_representations.detach().clone()
    sd["module.restoration_net.res_connect1.inject_degradation.fg_dwconv.weight"] = torch.zeros(16, 8, 3, 3)
    sd["module.restoration_net.res_connect2.inject_degradation.low_rank_transform2.conv_C.1.bias"] = torch.zeros(4)
    sd["module.degradation_net.refinement.body.0.body.0.weight"] = torch.zeros(2)
    return sd


def _with_reconstruction(model: NDRRestore, bias: float) -> NDRRestore:
    rec = model.restoration_net.reconstruction
    with torch.no_grad():
        rec.weight.zero_()
        rec.bias.fill_(bias)
    return model


def test_from_official_loads_aliases_ignores_legacy_keys_and_flips_bgr(tmp_path):
    torch.manual_seed(5)
    src = NDRRestore(SMALL_OFFICIAL).eval()
    path = tmp_path / "model_L.pth"
    torch.save(_official_state(src), path)
    model = NDRRestore.from_official(path, residual=False, config=SMALL_OFFICIAL)
    assert model.bgr and model.degradation_net is None and not model.config.residual
    assert torch.equal(model.degradation_representations, src.degradation_representations)
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = src(x.flip(1)).flip(1).clamp(0, 1)
    assert torch.allclose(model.restore(x), expected, atol=1e-6)
    # the alias alone is enough
    sd = _official_state(src)
    del sd["module.degradation_representations"]
    alone = NDRRestore.from_official(sd, residual=False, config=SMALL_OFFICIAL)
    assert torch.equal(alone.degradation_representations, src.degradation_representations)


@pytest.mark.parametrize("truth", [True, False])
def test_from_official_detects_the_residual_variant(tmp_path, truth):
    torch.manual_seed(7)
    # residual checkpoint: zero output conv, so residual=True returns the noisy input (~20 dB) and False returns 0;
    # non-residual checkpoint: output conv bias = grey, so False returns a flat grey image, True returns x + 0.5.
    src = _with_reconstruction(NDRRestore(SMALL_OFFICIAL, residual=truth), 0.0 if truth else 0.5)
    path = tmp_path / "model_L.pth"
    torch.save(_official_state(src), path)
    model = NDRRestore.from_official(path, config=SMALL_OFFICIAL)
    assert model.config.residual is truth
    scores = model.config.extra["residual_probe_psnr"]
    assert scores[str(truth)] > scores[str(not truth)] + 3


def test_from_official_names_file_and_bad_keys(tmp_path):
    src = NDRRestore(SMALL_OFFICIAL)
    sd = _official_state(src)
    sd["module.restoration_net.bogus.weight"] = torch.zeros(1)
    del sd["module.restoration_net.extractor.bias"]
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="broken.pth") as err:
        NDRRestore.from_official(path, residual=False, config=SMALL_OFFICIAL)
    assert "restoration_net.bogus.weight" in str(err.value) and "restoration_net.extractor.bias" in str(err.value)
    sd = _official_state(src)
    sd["module.restoration_net.dr"] = sd["module.restoration_net.dr"] + 1
    with pytest.raises(ValueError, match="alias"):
        NDRRestore.from_official(sd, residual=False, config=SMALL_OFFICIAL)


@pytest.mark.slow
def test_from_official_full_size_layout(tmp_path):
    torch.manual_seed(8)
    src = NDRRestore("official")
    assert sum(p.numel() for k, p in src.named_parameters() if k.startswith(("restoration", "degradation_r"))) == (
        27_330_315
    )
    sd = _official_state(src)
    sd["module.restoration_net.res_connect1.inject_degradation.fg_dwconv.weight"] = torch.zeros(96, 48, 3, 3)
    path = tmp_path / "model_L.pth"
    torch.save(sd, path)
    model = NDRRestore.from_official(path)
    assert model.multiple == 8 and isinstance(model.config.residual, bool)
    assert model.restore(torch.rand(3, 20, 12)).shape == (3, 20, 12)


# ----- data and training ---------------------------------------------------------------------------------------------
def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _make_data(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    yy, xx = np.mgrid[0:40, 0:40]
    for i in range(3):
        smooth = (127 + 100 * np.sin(xx / (3 + i)) * np.cos(yy / (4 + i)))[..., None] * np.array([1.0, 0.8, 0.6])
        (folder / f"im{i}.png").write_bytes(_png_bytes(np.clip(smooth, 0, 255).astype(np.uint8)))
    tar_path = tmp_path / "small.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for split in ("train", "test"):
            for i in range(2):
                data = _png_bytes(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
                info = tarfile.TarInfo(f"{split}/cls/{i}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder, tar_path


def test_data_loading_from_folder_and_tar(tmp_path):
    folder, tar_path = _make_data(tmp_path)
    assert len(load_images(folder)) == 3
    train = load_images(tar_path, split="train")
    assert len(train) == 2 and train[0].shape == (3, 32, 32) and train[0].dtype == torch.uint8
    with pytest.raises(ValueError, match="no images"):
        load_images(tar_path, split="val")
    sampler = PatchSampler([load_images(folder), train], patch_size=16, batch_size=2, weights=[1, 1])
    assert sampler.sample().shape[-1] == 16
    big = PatchSampler([train], patch_size=64, batch_size=2)
    assert big.sample().shape == (8, 3, 32, 32)  # smaller images: same pixel count per batch
    s = sample_sigma(1000, 1.0, 0.5, torch.Generator().manual_seed(0))
    assert s.min() >= 1e-3 and s.max() <= 1.0 and (s < 0.05).float().mean() > 0.3


def test_short_training_decreases_loss_checkpoints_resumes_and_exports(tmp_path):
    folder, tar_path = _make_data(tmp_path)
    run = tmp_path / "run"
    g = torch.Generator().manual_seed(9)
    clean = load_images(folder)[0][None, :, :16, :16].float() / 255
    clean = clean.expand(2, -1, -1, -1)
    sigma = torch.tensor([0.05, 0.3]).view(2, 1, 1, 1)
    noise = torch.randn(clean.shape, generator=g)

    def fixed_loss(model):
        with torch.no_grad():
            return float(training_loss(model, clean, sigma, noise)[0])

    before = fixed_loss(_tiny())
    common = [
        "--run",
        str(run),
        "--config",
        "tiny",
        "--data",
        str(folder),
        f"{tar_path}:train@0.5",
        "--patch",
        "16",
        "--batch",
        "4",
        "--lr",
        "3e-3",
        "--warmup",
        "1",
        "--minutes",
        "5",
        "--no-progress",
    ]
    assert main([*common, "--max-steps", "12"]) == 0
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["step"] == 12 and "optimizer" in ckpt
    after = fixed_loss(load_checkpoint(run / "last.pt"))
    assert after < 0.8 * before
    export_prefix = tmp_path / "weights" / "tiny"
    assert main([*common, "--max-steps", "14", "--resume", "--export", str(export_prefix)]) == 0
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 14
    meta = json.loads(export_prefix.with_suffix(".json").read_text())
    assert meta["training"]["steps"] == 14 and meta["config"]["use_degrad"] is False

    from zsir.models.builtin import load_shipped

    shipped = load_shipped(str(export_prefix))
    trained = load_checkpoint(run / "last.pt")
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(shipped(x, 0.1), trained(x, 0.1), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="shipped weights"):
        load_shipped(str(tmp_path / "nothing"))

    # fine-tuning from exported weights: 0 steps reproduce them, more steps move them and record the origin
    tune = [*common[2:], "--init", str(export_prefix)]
    same, moved = tmp_path / "tuned0", tmp_path / "tuned3"
    assert main(["--run", str(tmp_path / "run0"), *tune, "--max-steps", "0", "--export", str(same)]) == 0
    assert torch.allclose(load_shipped(str(same))(x, 0.1), shipped(x, 0.1), atol=1e-6)
    assert main(["--run", str(tmp_path / "run3"), *tune, "--max-steps", "3", "--export", str(moved)]) == 0
    assert not torch.allclose(load_shipped(str(moved))(x, 0.1), shipped(x, 0.1), atol=1e-6)
    info = json.loads(moved.with_suffix(".json").read_text())["training"]
    assert info["steps"] == 3 and info["init"]["steps"] == 14 and info["init"]["weights"] == str(export_prefix)


def test_checkpoint_config_round_trip():
    cfg = replace(NDRConfig.preset("lite"), sigma_max=2.0)
    assert NDRConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        NDRConfig.from_dict({**cfg.to_dict(), "depth": 3})
