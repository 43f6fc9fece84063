"""The shared informative start (samplers/steps.py) and the behaviours it fixed (RDMD's noiseless data step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsir import metrics, operators
from zsir.priors.base import Prior
from zsir.samplers import SAMPLERS
from zsir.samplers.steps import informative_start, interpolate_fill, median_fill


def _astronaut(size: int = 64) -> torch.Tensor:
    """A natural image that ships with scikit-image: (1, 3, size, size) in [-1, 1] model units."""
    from skimage import data

    x = torch.from_numpy(data.astronaut()[40 : 40 + size, 180 : 180 + size].astype(np.float32) / 255.0)
    return x.permute(2, 0, 1)[None] * 2.0 - 1.0


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(metrics.psnr(((a + 1) / 2).clamp(0, 1), (b + 1) / 2).mean())


def _linear_interpolation(y: torch.Tensor, observed: np.ndarray) -> torch.Tensor:
    """Delaunay-linear interpolation of the observed pixels (scipy), nearest outside the convex hull."""
    from scipy.interpolate import griddata

    ii, jj = np.nonzero(observed)
    qi, qj = np.nonzero(~observed)
    out = y.clone()
    for c in range(y.shape[1]):
        v = y[0, c].numpy()
        lin = griddata((ii, jj), v[ii, jj], (qi, qj), method="linear")
        near = griddata((ii, jj), v[ii, jj], (qi, qj), method="nearest")
        out[0, c][qi, qj] = torch.from_numpy(np.where(np.isnan(lin), near, lin)).float()
    return out


def test_interpolation_fill_of_random_80_percent_inpainting_matches_linear_interpolation():
    """On a real image the fill is within 0.5 dB of scipy's linear interpolation and far above mid-grey holes."""
    pytest.importorskip("skimage")
    pytest.importorskip("scipy")
    x = _astronaut()
    mask = operators.random_mask((64, 64), 0.8, generator=torch.Generator().manual_seed(0))
    op = operators.Inpainting(mask)
    y = op.A(x)
    start = informative_start(y, op)
    reference = _linear_interpolation(y, mask.numpy().astype(bool).reshape(64, 64))
    assert _psnr(start, x) > _psnr(reference, x) - 0.5
    assert _psnr(start, x) > _psnr(y, x) + 8.0  # the grey-hole start the samplers used before
    torch.testing.assert_close(start[:, :, mask.bool().reshape(64, 64)], y[:, :, mask.bool().reshape(64, 64)])


def test_fill_leaves_observed_pixels_and_far_holes_get_the_observed_mean():
    x = torch.zeros(1, 1, 80, 80)
    x[..., 0, 0] = 1.0
    holes = torch.ones(1, 1, 80, 80, dtype=torch.bool)
    holes[..., 0, 0] = False
    out = interpolate_fill(x, holes, scales=(1.0,))
    assert float(out[0, 0, 0, 0]) == 1.0
    assert float(out[0, 0, 79, 79]) == 1.0  # beyond 3 px of every observed pixel: the mean of the observed ones
    with pytest.raises(ValueError, match="no observed pixel"):
        interpolate_fill(x, torch.ones_like(holes))


def test_start_is_bicubic_for_sr_and_wiener_for_blur():
    y = torch.rand(2, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(
        informative_start(y, operators.BicubicSR(4)), F.interpolate(y, size=(32, 32), mode="bicubic")
    )
    # a circular blur is diagonal in the DFT: the Wiener start is conj(K) Y / (|K|^2 + sigma^2 / 0.2)
    k = operators.gaussian_kernel_2d(5, 1.0)
    op = operators.CircularBlur(k)
    sigma = torch.full((2, 1, 1, 1), 0.1)
    delta = torch.zeros(1, 1, 16, 16)
    delta[..., 0, 0] = 1.0
    K = torch.fft.fft2(op.A(delta))  # the transfer function of a circular blur is the DFT of its impulse response
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    expected = torch.fft.ifft2(K.conj() * torch.fft.fft2(y) / (K.abs() ** 2 + 0.01 / 0.2)).real
    torch.testing.assert_close(informative_start(y, op, sigma), expected, atol=1e-5, rtol=1e-4)


def test_median_fill_option_is_cm4irs_fill():
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    mask = operators.random_mask((16, 16), 0.5, generator=torch.Generator().manual_seed(1))
    op = operators.Inpainting(mask)
    y = op.A(x)
    holes = (mask == 0).reshape(1, 1, 16, 16)
    torch.testing.assert_close(informative_start(y, op, fill="median"), median_fill(y, holes))
    with pytest.raises(ValueError, match="fill"):
        informative_start(y, op, fill="nearest")


class Oracle(Prior):
    """Returns a fixed image whatever it is asked (the posterior of a point-mass prior)."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.channels, self.target = target.shape[1], target

    def _denoise(self, x, sigma, **kw):
        return self.target.expand_as(x)


def test_rdmd_noiseless_inpainting_takes_the_prior_in_the_holes():
    """With a point-mass prior at x*, the exact data step returns x* (= y on the observed pixels); the paper's
    gradient step leaves the holes at the start (prior weight ~1e-5 / sigma_t^2) and says so."""
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    mask = operators.random_mask((16, 16), 0.8, generator=torch.Generator().manual_seed(0))
    op = operators.Inpainting(mask)
    y = op.A(x)
    zero = torch.zeros(1, 1, 1, 1)
    rdmd = SAMPLERS.get("rdmd")
    out = rdmd(Oracle(x), steps=20, progress=False)(y, op, zero, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x)
    with pytest.warns(UserWarning, match="noiseless"):
        grad = rdmd(Oracle(x), steps=20, progress=False, data_step="gradient")(
            y, op, zero, torch.Generator().manual_seed(0)
        )
    start = informative_start(y, op)
    assert float((grad - start).abs().max()) < 0.05 * float((x - start).abs().max())


def test_diffpir_deepinv_preset_is_deepinvs_data_step():
    """deepinv's DiffPIR solves prox_l2(z, y, gamma = 1 / (2 rho)) with rho = lambda sigma_y^2 / sigma_t^2 and
    lambda = 7; for the identity that is (y + 2 rho z) / (1 + 2 rho). zsir's preset must give the same step."""
    from zsir.samplers.diffpir import DiffPIR, diffpir_rho

    lam = DiffPIR.preset("deepinv").params["lambda_"]
    z, y = torch.rand(1, 3, 4, 4) * 2 - 1, torch.rand(1, 3, 4, 4) * 2 - 1
    sigma_model, sigma_t = torch.full((1, 1, 1, 1), 0.1), 0.3  # sigma_y = 0.05 in [0, 1] units
    rho_deepinv = 7.0 * 0.05**2 / sigma_t**2
    ours = operators.Identity().prox_l2(z, y, 1.0 / diffpir_rho(lam, sigma_model, sigma_t))
    torch.testing.assert_close(ours, (y + 2 * rho_deepinv * z) / (1 + 2 * rho_deepinv))


def test_samplers_with_the_builtin_prior_beat_the_measurement_on_a_real_image():
    """Random-80 % inpainting of a photograph (measured: grey holes 5.9 dB, linear interpolation 24.3, PnP 22.3,
    RDMD 20.3 dB: the small built-in prior does not beat interpolation here, see the README) and denoising."""
    pytest.importorskip("skimage")
    pytest.importorskip("scipy")
    import zsir

    prior = zsir.load_prior("builtin")
    x = (_astronaut() + 1) / 2
    mask = operators.random_mask((64, 64), 0.8, generator=torch.Generator().manual_seed(0))
    op = operators.Inpainting(mask)
    y = op.A(x)
    interp = float(metrics.psnr(_linear_interpolation(y, mask.bool().reshape(64, 64).numpy()), x))
    for name, steps, margin in (("pnp", None, 3.0), ("rdmd", 20, 5.0)):
        out = zsir.solve(y, op, sampler=name, prior=prior, steps=steps, generator=0, progress=False)
        assert float(metrics.psnr(out, x)) > interp - margin, name
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    ident = operators.Identity()
    out = zsir.solve(noisy, ident, sampler="pnp", prior=prior, sigma_y=0.05, generator=0, progress=False)
    assert float(metrics.psnr(out, x)) > float(metrics.psnr(noisy, x)) + 3.0


def test_cm4ir_fit_truncation_keeps_every_step_inside_the_prior_range():
    from zsir.samplers.schedules import cm4ir_taus

    class Limited(Oracle):
        sigma_max = 0.55

    prior = Limited(torch.zeros(1, 3, 8, 8))
    cm4ir = SAMPLERS.get("cm4ir")
    dropped = cm4ir(prior, progress=False)
    assert dropped.total_nfe() == 2  # default taus 0.694, 0.614, 0.503, 0.322: two above 0.55
    fit = cm4ir(prior, progress=False, truncation="fit")
    assert fit.total_nfe() == 4 and fit.taus[0] <= 0.55 < cm4ir_taus(fit.i_n + 1, 0.2)[0]
    assert fit.taus == cm4ir_taus(fit.i_n, 0.2)
