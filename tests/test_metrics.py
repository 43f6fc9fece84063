"""zsir.metrics: known PSNR values, uint8 and border options, piq metrics, LPIPS offline behaviour."""

from __future__ import annotations

import pytest
import torch

from zsir import metrics as M


def _pair(B=2, C=3, size=48, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(B, C, size, size, generator=g) * 0.8 + 0.1
    return (ref + noise * torch.randn(B, C, size, size, generator=g)).clamp(0, 1), ref


def test_psnr_constant_offset_known_value():
    ref = torch.full((3, 1, 8, 8), 0.5)
    out = M.psnr(ref + 0.1, ref)
    assert out.shape == (3,)
    torch.testing.assert_close(out, torch.full((3,), 20.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(M.psnr(255 * ref + 25.5, 255 * ref, data_range=255.0), out, atol=1e-3, rtol=0)


def test_psnr_uint8_and_crop_border():
    ref = torch.full((1, 3, 16, 16), 0.5)
    x = ref + 0.001  # below half an 8-bit step: identical after quantisation
    assert float(M.psnr(x, ref)) < 61 and float(M.psnr(x, ref, uint8=True)) >= 79
    y = ref.clone()
    y[..., :2, :] = 0.9  # error only in the 2-pixel top border
    assert float(M.psnr(y, ref)) < 20 and float(M.psnr(y, ref, crop_border=2)) >= 79
    with pytest.raises(ValueError, match="crop_border"):
        M.psnr(y, ref, crop_border=8)


@pytest.mark.parametrize("channels", [1, 3])
def test_piq_metrics_shape_and_order(channels):
    good, ref = _pair(C=channels, noise=0.02)
    bad, _ = _pair(C=channels, noise=0.2)
    for name, higher_better in (("psnr", 1), ("ssim", 1), ("haarpsi", 1), ("vif", 1), ("mdsi", -1), ("gmsd", -1)):
        g, b = M.METRICS[name](good, ref), M.METRICS[name](bad, ref)
        assert g.shape == (2,) and torch.isfinite(g).all(), name
        assert bool((higher_better * (g - b) > 0).all()), name


def test_compute_metrics_reports_size_limits_and_bad_input():
    x, ref = _pair(size=16)
    values, why = M.compute_metrics(x, ref, ("psnr", "ssim", "vif"))
    assert values["psnr"].shape == (2,) and values["ssim"].shape == (2,)
    assert values["vif"] is None and "41" in why["vif"]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.compute_metrics(x + 1, ref)
    with pytest.raises(ValueError, match="Did you mean 'psnr'"):
        M.compute_metrics(x, ref, ("pnsr",))
    with pytest.raises(ValueError, match="shape"):
        M.psnr(x[:, :, :8], ref)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_offline(net):
    path, url = M.lpips_weights_path(net)
    x, ref = _pair(size=32)
    if path.is_file():  # weights cached on this machine: LPIPS must work
        out = M.lpips(x, ref, net=net)
        assert out.shape == (2,) and bool((out >= 0).all())
    else:
        with pytest.raises(M.MetricUnavailable) as info:
            M.lpips(x, ref, net=net)
        assert path.name in str(info.value) and url in str(info.value)
