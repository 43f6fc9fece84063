"""Training of the built-in prior: architectures, step-based schedule, exact resume, export and loading."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from zsir.models.builtin import ARCHITECTURES, build_model, load_shipped
from zsir.models.convnets import ResUNet, UnshuffleCNN
from zsir.models.data import PatchSampler, load_images
from zsir.models.train import StepBatches, export, learning_rate, load_checkpoint, main


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    for i in range(3):
        smooth = 127 + 90 * np.sin(xx / (3 + i)) * np.cos(yy / (5 + i))
        rgb = np.clip(smooth[..., None] * np.array([1.0, 0.8, 0.6]) + rng.normal(0, 3, (40, 48, 3)), 0, 255)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"im{i}.png")
    return folder


def _common(run, folder, arch, *extra):
    return [
        "--run",
        str(run),
        "--arch",
        arch,
        "--config",
        "tiny",
        "--data",
        str(folder),
        "--patch",
        "16",
        "--batch",
        "2",
        "--lr",
        "2e-3",
        "--warmup",
        "2",
        "--threads",
        "1",
        "--no-progress",
        *extra,
    ]


def test_learning_rate_follows_the_step_only():
    lr, lo = 1e-3, 1e-5
    assert learning_rate(0, 100, lr, lo, 10) == pytest.approx(1e-4)  # warm-up: (step + 1) / warmup
    assert learning_rate(9, 100, lr, lo, 10) == pytest.approx(1e-3)
    assert learning_rate(10, 100, lr, lo, 10) == pytest.approx(1e-3)  # cosine starts at lr
    assert learning_rate(55, 100, lr, lo, 10) == pytest.approx((lr + lo) / 2)  # half way: cos(pi/2) = 0
    assert learning_rate(40, 100, lr, lo, 10) == pytest.approx(lo + (lr - lo) * (1 + math.cos(math.pi / 3)) / 2)
    assert learning_rate(100, 100, lr, lo, 10) == pytest.approx(lo)
    assert learning_rate(500, 100, lr, lo, 10) == pytest.approx(lo)  # past the end: stays at lr_min
    assert learning_rate(0, 100, lr, lo, 0) == pytest.approx(lr)  # no warm-up


def test_batches_depend_on_seed_and_index_only(images):
    sampler = PatchSampler([load_images(images)], 16, 2)
    batches = StepBatches(sampler, seed=3, sigma_max=1.0, p_log=0.5)
    late_first = [t.clone() for t in batches[7]]
    _ = batches[2]
    again = batches[7]
    assert all(torch.equal(a, b) for a, b in zip(late_first, again, strict=True))
    assert not torch.equal(batches[8][2], again[2])
    assert not torch.equal(StepBatches(sampler, 4, 1.0, 0.5)[7][2], again[2])


@pytest.mark.parametrize("arch", ["unet", "unshuffle", "ndr"])
def test_resume_equals_uninterrupted_run_bitwise(tmp_path, images, arch):
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(_common(full, images, arch, "--steps", "6")) == 0
    assert main(_common(split, images, arch, "--steps", "6", "--max-steps", "3")) == 0
    assert torch.load(split / "last.pt", weights_only=False)["step"] == 3
    assert main(_common(split, images, arch, "--steps", "6", "--resume")) == 0
    a = torch.load(full / "last.pt", weights_only=False)
    b = torch.load(split / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 6 and a["arch"] == ARCHITECTURES[arch][0].__name__
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    first = torch.load(split / "last.pt", weights_only=False)  # and training moved the weights at all
    fresh = build_model(arch, "tiny").state_dict()
    assert any(not torch.equal(first["model"][k], fresh[k]) for k in fresh)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_each_architecture_exports_and_loads_back(tmp_path, arch):
    model = build_model(arch, "tiny")
    st, js = export(model, tmp_path / "w", {"steps": 1, "data": ["x"]})
    meta = json.loads(js.read_text())
    assert meta["arch"] == type(model).__name__
    assert meta["params"] == sum(v.numel() for v in model.restoration_parameters().values())
    loaded = load_shipped(str(tmp_path / "w"))
    assert type(loaded) is type(model) and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x, 0.2), model.eval()(x, 0.2), atol=1e-6)
    odd = torch.rand(3, 19, 13)
    out = loaded.restore(odd, 0.1)
    assert out.shape == odd.shape and 0 <= out.min() and out.max() <= 1


def test_old_ndr_weights_still_load():
    from zsir.models.builtin import WEIGHTS_DIR

    assert json.loads((WEIGHTS_DIR / "ndr_lite.json").read_text())["arch"] == "NDRRestore"  # written before v2
    model = load_shipped("ndr_lite")
    assert type(model).__name__ == "NDRRestore" and model.degradation_net is None


def test_corrupt_or_wrong_files_give_named_errors(tmp_path):
    export(build_model("unet", "tiny"), tmp_path / "ok")
    st, js = tmp_path / "ok.safetensors", tmp_path / "ok.json"
    (tmp_path / "trunc.safetensors").write_bytes(st.read_bytes()[:100])
    (tmp_path / "trunc.json").write_text(js.read_text())
    with pytest.raises(ValueError, match=r"trunc\.safetensors: not a readable safetensors"):
        load_shipped(str(tmp_path / "trunc"))
    (tmp_path / "badjson.safetensors").write_bytes(st.read_bytes())
    (tmp_path / "badjson.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"badjson\.json: not a valid JSON"):
        load_shipped(str(tmp_path / "badjson"))
    meta = json.loads(js.read_text())
    (tmp_path / "arch.safetensors").write_bytes(st.read_bytes())
    (tmp_path / "arch.json").write_text(json.dumps({**meta, "arch": "VGG"}))
    with pytest.raises(ValueError, match=r"arch\.json: expected 'arch'.*'VGG'"):
        load_shipped(str(tmp_path / "arch"))
    (tmp_path / "shape.safetensors").write_bytes(st.read_bytes())
    (tmp_path / "shape.json").write_text(json.dumps({**meta, "config": {**meta["config"], "widths": [4, 16]}}))
    with pytest.raises(ValueError, match="does not match.*wrong shapes"):
        load_shipped(str(tmp_path / "shape"))
    (tmp_path / "field.safetensors").write_bytes(st.read_bytes())
    (tmp_path / "field.json").write_text(json.dumps({**meta, "config": {**meta["config"], "depth": 3}}))
    with pytest.raises(ValueError, match="invalid ResUNet config.*depth"):
        load_shipped(str(tmp_path / "field"))


@pytest.mark.parametrize("cls", [UnshuffleCNN, ResUNet])
def test_denoiser_is_identity_at_zero_noise_and_per_image_sigma(cls):
    model = cls(**({"width": 8, "depth": 3} if cls is UnshuffleCNN else {"widths": (4, 8)})).eval()
    x = torch.rand(2, 3, 8, 8) * 1.4 - 0.2
    with torch.no_grad():
        assert torch.allclose(model(x, 0.0), x, atol=1e-6)  # c_skip = 1, c_out = 0 at sigma = 0
        both = model(x, torch.tensor([0.1, 0.5]))
        assert torch.allclose(both[:1], model(x[:1], 0.1), atol=1e-6)
        assert torch.allclose(both[1:], model(x[1:], 0.5), atol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        model(x, None)
    with pytest.raises(ValueError, match="multiples"):
        model(torch.rand(1, 3, 7, 8), 0.1)


def test_gpu_code_path_on_cpu_amp_channels_last_workers(tmp_path, images):
    run, prefix = tmp_path / "gpu", tmp_path / "out" / "prior"
    extra = ["--steps", "3", "--amp", "bf16", "--channels-last", "--workers", "1", "--export", str(prefix)]
    assert main(_common(run, images, "unet", *extra)) == 0
    meta = json.loads(prefix.with_suffix(".json").read_text())
    assert meta["arch"] == "ResUNet" and meta["training"]["amp"] == "bf16" and meta["training"]["steps"] == 3
    model = load_checkpoint(run / "last.pt")
    assert torch.isfinite(model(torch.rand(1, 3, 8, 8), 0.1)).all()


def test_bad_arguments_are_named(tmp_path, images):
    with pytest.raises(ValueError, match="--ablation"):
        main(_common(tmp_path / "r", images, "unet", "--ablation", "plain"))
    with pytest.raises(ValueError, match="--resume"):
        main(_common(tmp_path / "none", images, "unet", "--resume"))
    with pytest.raises(ValueError, match="config: unknown preset"):
        build_model("unet", "huge")
    with pytest.raises(ValueError, match="arch"):
        build_model("vgg")


@pytest.mark.parametrize("arch", ["unshuffle", "unet"])
def test_fresh_networks_pass_a_unit_scale_signal(arch):
    # with PyTorch's default init the 12-layer ReLU stack shrank a unit input ~40-fold and never learnt
    torch.manual_seed(0)
    model = build_model(arch, "small")
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert 0.3 < float(model.body(x).std()) < 3
        if arch == "unet":  # every residual block starts as the identity
            h = torch.randn(1, 16, 8, 8)
            assert torch.equal(model.down[0][0](h), h)
