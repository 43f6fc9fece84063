"""Diffusers pipelines in both layouts: ``unet/`` + ``scheduler/`` sub-folders, and flat (model_index.json,
config.json, weights and scheduler_config.json at the root, like the current google/ddpm-ema-celebahq-256).

Local folders and Hub repositories (a Hugging Face cache built here, read with HF_HUB_OFFLINE=1) must load the
same network either way, as diffusers' own pipelines do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from zsir.priors import DiffusersPrior, load_prior
from zsir.priors.diffusers import locate_pipeline


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> tuple[Path, Path]:
    """The same tiny DDPM saved twice: nested (``root/nested``) and flat (``root/flat``), weights as ``.bin``."""
    root = tmp_path_factory.mktemp("pipelines")
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
    ).eval()  # fmt: skip
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    nested, flat = root / "nested", root / "flat"
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(nested, safe_serialization=False)
    unet.save_pretrained(flat, safe_serialization=False)
    scheduler.save_pretrained(flat)
    shutil.copy(nested / "model_index.json", flat / "model_index.json")
    assert not (flat / "unet").exists() and (flat / "config.json").is_file()
    return nested, flat


def _denoised(prior) -> torch.Tensor:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return prior.denoise(x, torch.tensor([0.3, 2.0]))


def test_local_flat_pipeline_folder_loads_like_the_nested_one(pipelines):
    nested, flat = pipelines
    assert locate_pipeline(flat)[0] == flat and locate_pipeline(nested)[0] == nested / "unet"
    a, b = DiffusersPrior.from_pretrained(nested), DiffusersPrior.from_pretrained(flat)
    torch.testing.assert_close(a.alphas_cumprod, b.alphas_cumprod, rtol=0, atol=0)
    torch.testing.assert_close(_denoised(a), _denoised(b), rtol=0, atol=0)
    assert isinstance(load_prior(flat), DiffusersPrior)


def _hub_cache(cache: Path, repo_id: str, folder: Path, missing: list[str]) -> None:
    """A Hugging Face cache entry for ``repo_id`` holding ``folder``'s files, with ``.no_exist`` markers (what
    huggingface_hub records after a 404) for the ``missing`` names."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    for name in missing:
        marker = repo / ".no_exist" / commit / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def test_hub_repositories_in_both_layouts_load_offline(pipelines, tmp_path, monkeypatch):
    nested, flat = pipelines
    cache = tmp_path / "hf"
    weights = "diffusion_pytorch_model.safetensors"
    _hub_cache(cache, "zsir-test/nested", nested, [f"unet/{weights}"])
    _hub_cache(cache, "zsir-test/flat", flat, ["unet/config.json", "scheduler/scheduler_config.json", weights])
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    unet_dir, scheduler = locate_pipeline("zsir-test/flat")
    assert (unet_dir / "config.json").is_file() and unet_dir.name != "unet"
    assert scheduler is not None and scheduler["_class_name"] == "DDPMScheduler"
    a = DiffusersPrior.from_pretrained("zsir-test/nested")
    b = load_prior("zsir-test/flat")
    assert isinstance(b, DiffusersPrior)
    torch.testing.assert_close(_denoised(a), _denoised(b), rtol=0, atol=0)


def test_a_folder_without_any_unet_config_is_rejected_with_the_layouts_named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model_index.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="flat pipeline folder"):
        locate_pipeline(tmp_path / "empty")
