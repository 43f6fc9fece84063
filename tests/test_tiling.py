"""Tiling in the Prior base: exactness where one tile suffices, blending, seams, seeded grid shifts, errors."""

import pytest
import torch
from torch import nn

import zsir
from zsir.operators import BicubicSR, Identity
from zsir.priors.base import CONV_TILE, Prior, blend_window, tile_starts
from zsir.priors.denoiser import DenoiserPrior


class RecordingPrior(Prior):
    """x0 = x / (1 + sigma^2) (pointwise, so any tiling must reproduce it exactly); records tile positions."""

    multiple = 4

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shapes = []

    def _denoise(self, x, sigma, **kwargs):
        self.shapes.append(tuple(x.shape[-2:]))
        return x / (1 + sigma**2)


def conv_prior(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.Tanh(), nn.Conv2d(8, 3, 5, padding=2))
    return DenoiserPrior(lambda x, s: x + 0.1 * net(x), sigma_max=1.0, multiple=4, name="conv")


def smooth_image(H, W):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack(
        [0.5 + 0.3 * torch.sin(2 * torch.pi * xx) * torch.cos(torch.pi * yy), 0.3 + 0.4 * xx, 0.7 - 0.4 * yy]
    )[None]


def test_image_within_one_tile_equals_untiled_and_leaves_the_generator_alone():
    prior = conv_prior()
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    with torch.no_grad(), prior.use_tiling(48, 8):
        tiled = prior.denoise(x, 0.3, generator=g)
    with torch.no_grad(), prior.use_tiling(0):
        ref = prior.denoise(x, 0.3)
    torch.testing.assert_close(tiled, ref, rtol=0, atol=0)
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("seed", range(3))
def test_pointwise_denoiser_is_reproduced_exactly_on_any_shifted_grid(seed):
    x = torch.randn(2, 3, 70, 93, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    prior = RecordingPrior()
    with prior.use_tiling(32, 8):
        out = prior.denoise(x, 0.7, generator=torch.Generator().manual_seed(seed))
    assert len(prior.shapes) >= 9 and set(prior.shapes) == {(32, 32)}  # every tile full size
    torch.testing.assert_close(out, x / 1.49, rtol=1e-12, atol=1e-12)


def test_tile_grid_covers_with_the_minimum_overlap():
    for n, tile, stride, offset in [(100, 32, 24, 0), (100, 32, 24, 23), (33, 32, 24, 5), (32, 32, 24, 7)]:
        starts = tile_starts(n, tile, stride, offset)
        assert starts[0] == 0 and starts[-1] == max(n - tile, 0)
        assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:], strict=False))  # overlap >= tile - stride


def test_blend_window_is_a_raised_cosine_on_inner_sides_only():
    w = blend_window(10, 100, 32, 4, torch.zeros(1, dtype=torch.float64))
    t = torch.arange(1, 5, dtype=torch.float64)
    torch.testing.assert_close(w[:4], torch.sin(torch.pi / 2 * t / 5) ** 2)
    torch.testing.assert_close(w[-4:], (torch.sin(torch.pi / 2 * t / 5) ** 2).flip(0))
    assert (w[4:-4] == 1).all()
    assert (blend_window(0, 100, 32, 4, w)[:4] == 1).all()  # image border: no taper


def seam_excess(out, ref, starts, tile):
    """Largest increase, over the untiled output, of a column-to-column step at a tile border."""
    steps = lambda o: (o[..., 1:] - o[..., :-1]).abs().amax(dim=(0, 1, 2))  # noqa: E731
    cols = sorted({s - 1 for s in starts if s > 0} | {s + tile - 1 for s in starts if s + tile < out.shape[-1]})
    return (steps(out)[cols] - steps(ref)[cols]).max().item(), steps(out)[cols].max().item(), steps(ref).max().item()


def check_no_seam(prior, H, W, tile, overlap):
    """Threshold: a step across a tile border exceeds the untiled output's step there by at most 0.01 ([-1, 1]
    units, 1.3 grey levels of 255) and stays below the largest step of the untiled output anywhere; hard seams
    (overlap 0, no blending) must fail, so the check can fail."""
    x = smooth_image(H, W) * 2 - 1
    with torch.no_grad():
        with prior.use_tiling(0):
            ref = prior.denoise(x, 0.05)
        results = {}
        for ov in (0, overlap):
            with prior.use_tiling(tile, ov):
                results[ov] = seam_excess(prior.denoise(x, 0.05), ref, tile_starts(W, tile, tile - ov), tile)
    excess, border, untiled_max = results[overlap]
    assert excess <= 0.01 and border <= untiled_max
    hard_excess, hard_border, _ = results[0]
    assert not (hard_excess <= 0.01 and hard_border <= untiled_max)


def test_no_seam_on_a_smooth_image():
    check_no_seam(conv_prior(), 32, 96, 32, 8)


@pytest.mark.slow
def test_no_seam_on_a_smooth_image_with_the_builtin_prior():
    check_no_seam(zsir.load_prior("builtin"), 96, 160, 64, 16)


def test_solve_with_tiling_is_seeded_and_shifts_the_grid_per_call():
    x = smooth_image(40, 56)
    op = BicubicSR(2)
    y = op.A(x)
    prior = RecordingPrior(name="rec")
    kw = dict(sampler="diffpir", prior=prior, steps=4, progress=False, tile=16, tile_overlap=4, return_result=True)
    a = zsir.solve(y, op, generator=3, **kw)
    b = zsir.solve(y, op, generator=3, **kw)
    c = zsir.solve(y, op, generator=4, **kw)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert not torch.equal(a.x, c.x)
    assert a.tiling["tile"] == 16 and a.tiling["overlap"] == 4 and a.tiling["tiles_per_call"] > 1
    assert prior.tile_size is None and prior.tile_overlap is None  # restored after solve


def test_the_grid_shift_comes_from_the_generator_and_changes_per_call():
    prior = conv_prior()
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(9)
    with torch.no_grad(), prior.use_tiling(24, 4):
        first, second = prior.denoise(x, 0.3, generator=g), prior.denoise(x, 0.3, generator=g)
        again = prior.denoise(x, 0.3, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first - second).abs().max() > 1e-4  # another grid, another blend


def test_tiling_defaults_per_kind_of_prior():
    assert conv_prior().tiling() == (CONV_TILE, CONV_TILE // 8)
    fixed = RecordingPrior(train_size=(256, 256))
    fixed.fully_convolutional = False
    assert fixed.tiling() == (256, 32)
    assert zsir.priors.GaussianImagePrior.tile_size == 0


def test_bad_tiling_requests_are_named_before_any_work():
    prior = RecordingPrior()
    with pytest.raises(ValueError, match="tile: 6 is not a multiple of 4"):
        zsir.solve(torch.zeros(1, 3, 16, 16), BicubicSR(2), prior=prior, tile=6, progress=False)
    with pytest.raises(ValueError, match="tile_overlap: expected an integer in"):
        zsir.solve(torch.zeros(1, 3, 16, 16), BicubicSR(2), prior=prior, tile=16, tile_overlap=16, progress=False)
    with pytest.raises(ValueError, match="1x1 pixels is too small"):
        zsir.solve(torch.zeros(1, 3, 1, 1), Identity(), prior=prior, progress=False)
    assert prior.shapes == []


def test_cli_tile_options_and_the_json_record(tmp_path, capsys):
    import json

    from PIL import Image

    from zsir.cli import main

    img = (smooth_image(48, 40)[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    Image.fromarray(img).save(tmp_path / "a.png")
    base = ["restore", str(tmp_path / "a.png"), "--task", "sr2", "--sampler", "ddrm", "--steps", "2", "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "o"), "--tile", "32", "--tile-overlap", "8"]) == 0
    rec = json.loads((tmp_path / "o" / "a.json").read_text())
    assert rec["tiling"]["tile"] == 32 and rec["tiling"]["overlap"] == 8 and 12 <= rec["tiling"]["tiles_per_call"] <= 16
    assert main([*base, "-o", str(tmp_path / "p"), "--tile", "6"]) == 2
    assert "--tile: 6 is not a multiple of 4" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "q"), "--max-memory", "0.01"]) == 1
    err = capsys.readouterr().err
    assert "needs about" in err and "Options that fit" in err and not (tmp_path / "q" / "a.png").exists()


def test_autocast_runs_the_network_in_bfloat16_and_returns_float32():
    seen = []
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = nn.Conv2d(3, 3, 3, padding=1)
    net.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    prior = DenoiserPrior(lambda x, s: x + 0.1 * net(x), sigma_max=1.0, name="conv")
    with torch.no_grad():
        ref = prior.denoise(x, 0.3)
        prior.autocast_dtype = torch.bfloat16
        low = prior.denoise(x, 0.3)
    assert seen == [torch.float32, torch.bfloat16]
    assert low.dtype == torch.float32 and (low - ref).abs().max() < 0.05  # bfloat16 keeps ~3 significant digits


def test_dps_differentiates_through_a_tiled_prior():
    x = smooth_image(24, 32)
    op = BicubicSR(2)
    prior = conv_prior()
    kw = dict(sampler="dps", prior=prior, steps=2, progress=False, generator=0, return_result=True)
    tiled = zsir.solve(op.A(x), op, tile=16, tile_overlap=4, **kw)
    assert tiled.tiling["tiles_per_call"] > 1 and torch.isfinite(tiled.x).all()
