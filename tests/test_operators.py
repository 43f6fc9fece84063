"""Every operator against the generic references: dense matrices, conjugate gradients, autograd, direct formulas."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsir.operators import (
    AveragePoolSR,
    BicubicSR,
    CircularBlur,
    Colorization,
    Compose,
    Identity,
    Inpainting,
    LinearOperator,
    MatrixOperator,
    SeparableBlur,
    SVDOperator,
    bicubic_kernel,
    box_mask,
    gaussian_kernel,
    gaussian_kernel_2d,
    mask_from_image,
    motion_kernel,
    random_mask,
    uniform_kernel,
)

D = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass
class Case:
    name: str
    build: Callable[[], LinearOperator]
    shape: tuple[int, int, int, int]
    closed_form: bool = True  # False: pinv/prox come from the CG fallback


CASES = [
    Case("identity", Identity, (2, 3, 8, 8)),
    Case("inpaint-shared", lambda: Inpainting(random_mask((8, 8), 0.5, gen(0))), (2, 3, 8, 8)),
    Case("inpaint-channel", lambda: Inpainting(random_mask((3, 8, 8), 0.8, gen(1))[None]), (2, 3, 8, 8)),
    Case("avgpool-x2", lambda: AveragePoolSR(2), (2, 3, 16, 16)),
    Case("avgpool-x3", lambda: AveragePoolSR(3), (2, 1, 12, 15)),
    Case("bicubic-x2", lambda: BicubicSR(2), (2, 3, 16, 16)),
    Case("bicubic-x4", lambda: BicubicSR(4), (2, 3, 32, 32)),
    Case("bicubic-x3", lambda: BicubicSR(3), (2, 2, 12, 9)),
    Case("blur-gauss", lambda: SeparableBlur(gaussian_kernel(5, 1.0)), (2, 3, 12, 12)),
    Case("blur-aniso", lambda: SeparableBlur(torch.tensor([0.1, 0.3, 0.6]), uniform_kernel(5)), (2, 2, 12, 10)),
    Case("circular-gauss", lambda: CircularBlur(gaussian_kernel_2d(5, 1.0)), (2, 3, 12, 12)),
    Case("circular-motion", lambda: CircularBlur(motion_kernel(9, 0.5, gen(2))), (2, 2, 12, 11)),
    Case("colorization", Colorization, (2, 3, 8, 8)),
    Case("matrix", lambda: MatrixOperator(torch.randn(40, 48, generator=gen(3), dtype=D), (3, 4, 4)), (2, 3, 4, 4)),
    Case("compose", lambda: AveragePoolSR(2) @ SeparableBlur(gaussian_kernel(3, 1.0)), (2, 3, 8, 8), False),
    Case(
        "function",
        lambda: LinearOperator.from_function(lambda x: x[..., ::2, 1::2] + x[..., 1::2, ::2], (3, 8, 8)),
        (2, 3, 8, 8),
        False,
    ),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request) -> Case:
    return request.param


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def inputs(op: LinearOperator, shape, seed: int = 0):
    g = gen(seed)
    x = torch.randn(shape, generator=g, dtype=D)
    y = torch.randn(op.y_shape(shape), generator=g, dtype=D)
    return x, y


def dense(op: LinearOperator, shape) -> torch.Tensor:
    """The matrix of ``op`` for one image of ``shape[1:]``, built column by column (one batched call)."""
    n = int(np.prod(shape[1:]))
    basis = torch.eye(n, dtype=D).reshape(n, *shape[1:])
    return op.A(basis).reshape(n, -1).T


def rtol_of(op: LinearOperator) -> float:
    return getattr(op, "zero_threshold", 1e-10)


# ----- generic properties, every operator ---------------------------------------------------------------------
def test_shapes(case):
    op = case.build()
    x, _ = inputs(op, case.shape)
    y = op.A(x)
    assert tuple(y.shape) == op.y_shape(case.shape)
    assert op.x_shape(tuple(y.shape)) == case.shape
    assert tuple(op.At(y).shape) == case.shape


def test_adjointness(case):
    op = case.build()
    x, y = inputs(op, case.shape)
    lhs, rhs = (op.A(x) * y).sum(), (x * op.At(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-10 * float(op.A(x).norm() * y.norm())


def test_batch_independence(case):
    op = case.build()
    x, _ = inputs(op, case.shape)
    y = op.A(x)
    for i in range(x.shape[0]):
        torch.testing.assert_close(op.A(x[i : i + 1]), y[i : i + 1])


def test_pinv_solves_consistent_systems(case):
    op = case.build()
    x, _ = inputs(op, case.shape)
    y = op.A(x)
    assert rel(op.A(op.pinv(y)), y) <= (1e-9 if case.closed_form else 1e-5)


def test_pinv_matches_dense_lstsq(case):
    op = case.build()
    m = dense(op, case.shape)
    _, y = inputs(op, case.shape, seed=1)
    y_flat = y.reshape(y.shape[0], -1).T
    tol = 1e-8 if case.closed_form else 1e-4
    ref = (torch.linalg.pinv(m, rtol=rtol_of(op)) @ y_flat).T.reshape(case.shape)
    assert rel(op.pinv(y), ref) <= tol
    eta = torch.tensor([1e-2, 0.5], dtype=D).reshape(2, 1, 1, 1)
    for e, e_col in ((1e-3, (1e-3, 1e-3)), (eta, (1e-2, 0.5))):
        eye = torch.eye(m.shape[0], dtype=D)
        ref = torch.stack(
            [m.T @ torch.linalg.solve(m @ m.T + ec * eye, y_flat[:, i]) for i, ec in enumerate(e_col)]
        ).reshape(case.shape)
        assert rel(op.pinv(y, e), ref) <= tol


def test_pinv_matches_cg_fallback(case):
    op = case.build()
    generic = LinearOperator.from_function(op.A, case.shape)
    generic.cg_tol, generic.cg_max_iter = 1e-12, 5000
    _, y = inputs(op, case.shape, seed=2)
    for eta in (1e-2, 0.5):
        assert rel(op.pinv(y, eta), generic.pinv(y, eta)) <= (1e-7 if case.closed_form else 1e-4)


def test_svd_closed_forms(case):
    op = case.build()
    if not isinstance(op, SVDOperator):
        pytest.skip("not an SVD operator")
    x, y = inputs(op, case.shape)
    s = op.singulars(case.shape, dtype=D)
    c = op.Vt(x)
    assert c.shape == x.shape
    assert (s >= 0).all()
    torch.testing.assert_close(op.U(s * c), op.A(x))
    torch.testing.assert_close(op.V(c), x)
    torch.testing.assert_close(op.Vt(op.V(x)), x)  # V^T V = V V^T = I
    torch.testing.assert_close(c.norm(), x.norm())
    torch.testing.assert_close(op.V(s * op.Ut(y)), op.At(y))
    ut = op.Ut(y)
    assert ut.shape == x.shape
    assert (ut * (s == 0)).abs().max() == 0
    torch.testing.assert_close(op.Ut(op.U(ut)), ut)  # U is orthogonal on the support of s


def test_prox_optimality(case):
    op = case.build()
    if not case.closed_form:
        op.cg_tol = 1e-12
    x, y = inputs(op, case.shape)
    z = x + 0.3
    for gamma in (0.7, torch.tensor([0.3, 5.0], dtype=D).reshape(2, 1, 1, 1)):
        p = op.prox_l2(z, y, gamma)
        grad = gamma * op.At(op.A(p) - y) + (p - z)
        assert float(grad.norm()) <= 1e-8 * float(z.norm() + op.At(y).norm())


def test_norm_against_an_independent_computation(case):
    op = case.build()
    if type(op).norm is LinearOperator.norm:  # the power method itself: against the dense matrix's largest s.v.
        shape = (1, *case.shape[1:])
        n = math.prod(shape)
        dense = op.A(torch.eye(n, dtype=D).reshape(n, *shape[1:])).reshape(n, -1).T  # column j = A e_j
        ref = float(torch.linalg.matrix_norm(dense, ord=2))
    else:  # closed-form singular values: against the power method
        ref = LinearOperator.norm(op, case.shape, generator=gen(4))
    assert op.norm(case.shape) == pytest.approx(ref, rel=2e-3)


def test_float32_and_device(case, device):
    op = case.build().to(device)
    x, y = inputs(op, case.shape)
    ref_op = case.build()
    x32, y32 = x.to(device, torch.float32), y.to(device, torch.float32)
    for got, ref in (
        (op.A(x32), ref_op.A(x)),
        (op.At(y32), ref_op.At(y)),
        (op.pinv(op.A(x32), 0.05), ref_op.pinv(ref_op.A(x), 0.05)),
        (op.prox_l2(x32, y32, 0.5), ref_op.prox_l2(x, y, 0.5)),
    ):
        assert got.device.type == device.type and got.dtype == torch.float32
        assert rel(got.double().cpu(), ref) <= 1e-4


# ----- composition --------------------------------------------------------------------------------------------
def test_composition_order_and_adjoint():
    blur, pool = SeparableBlur(gaussian_kernel(3, 1.0)), AveragePoolSR(2)
    op = pool @ blur
    assert isinstance(op, Compose)
    x, y = inputs(op, (2, 3, 8, 8))
    torch.testing.assert_close(op.A(x), pool.A(blur.A(x)))
    torch.testing.assert_close(op.At(y), blur.At(pool.At(y)))
    assert op.y_shape((2, 3, 8, 8)) == (2, 3, 4, 4)
    assert abs(float((op.A(x) * y).sum() - (x * op.At(y)).sum())) <= 1e-10 * float(op.A(x).norm() * y.norm())


# ----- each operator against its direct definition -------------------------------------------------------------
def test_separable_blur_is_zero_padded_true_convolution_with_all_taps():
    kh, kw = torch.tensor([0.1, 0.3, 0.6], dtype=D), torch.tensor([0.5, 0.2, 0.1, 0.1, 0.1], dtype=D)
    op = SeparableBlur(kh, kw, zero_threshold=0.0)
    x = torch.randn(2, 3, 10, 9, generator=gen(0), dtype=D)
    weight = torch.outer(kh, kw).flip(0, 1).expand(3, 1, 3, 5)  # conv2d correlates: flip for a true convolution
    ref = F.conv2d(x, weight, padding=(1, 2), groups=3)
    torch.testing.assert_close(op.A(x), ref)
    s = op.singulars(x.shape, dtype=D)
    torch.testing.assert_close(op.U(s * op.Vt(x)), ref)  # per-channel singulars (no DDRM channel-major tiling)


def test_average_pool_matches_avg_pool2d():
    x = torch.rand(3, 2, 12, 8, generator=gen(0), dtype=D)
    torch.testing.assert_close(AveragePoolSR(4).A(x), F.avg_pool2d(x, 4))
    assert AveragePoolSR(4).singulars(x.shape, dtype=D).unique().tolist() == [0.0, 0.25]


@pytest.mark.parametrize("factor,n", [(2, 16), (4, 16), (3, 9), (4, 4)])
def test_bicubic_matrix_matches_ddrm_srconv_rule(factor, n):
    taps = bicubic_kernel(factor).numpy()
    k = taps.size
    ref = np.zeros((n // factor, n))
    for i in range(factor // 2, n + factor // 2, factor):  # DDRM SRConv loop, half-sample reflection
        for j in range(i - k // 2, i + k // 2):
            jj = j
            while jj < 0 or jj >= n:
                jj = -jj - 1 if jj < 0 else 2 * n - 1 - jj
            ref[i // factor, jj] += taps[j - i + k // 2]
    got = BicubicSR(factor).matrix_1d(n, 0).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-15)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-12)


def test_colorization_is_channel_mean():
    x = torch.rand(2, 3, 5, 6, generator=gen(0), dtype=D)
    op = Colorization()
    torch.testing.assert_close(op.A(x), x.mean(1, keepdim=True))
    assert op.norm(x.shape) == pytest.approx(3**-0.5)


def test_inpainting_keeps_shape_with_zero_holes_and_mask_layouts():
    mask = random_mask((6, 7), 0.5, gen(0))
    x = torch.rand(2, 3, 6, 7, generator=gen(1), dtype=D) + 0.1
    y = Inpainting(mask).A(x)
    assert y.shape == x.shape
    assert (y[:, :, ~mask] == 0).all() and (y[:, :, mask] == x[:, :, mask]).all()
    for m in (mask[None], mask[None, None].expand(1, 3, 6, 7), mask.expand(3, 6, 7).numpy()):
        torch.testing.assert_close(Inpainting(m).A(x), y)
    per_channel = random_mask((3, 6, 7), 0.5, gen(2))
    torch.testing.assert_close(Inpainting(per_channel).A(x), x * per_channel)


def test_circular_blur_matches_rolled_sum_and_impulse_response():
    k = motion_kernel(5, 1.0, gen(0)) + 0.01 * torch.arange(25, dtype=D).reshape(5, 5)  # asymmetric
    op = CircularBlur(k)
    x = torch.randn(2, 3, 12, 9, generator=gen(1), dtype=D)
    ref = sum(k[a, b] * torch.roll(x, (a - 2, b - 2), (-2, -1)) for a in range(5) for b in range(5))
    torch.testing.assert_close(op.A(x), ref)
    delta = torch.zeros(1, 1, 12, 9, dtype=D)
    delta[..., 0, 0] = 1
    torch.testing.assert_close(torch.fft.fft2(op.A(delta))[0, 0], op.spectrum(12, 9, dtype=D))
    assert op.spectrum(12, 9).dtype == torch.complex64


def test_pinv_is_finite_at_eta_zero_with_vanishing_singular_values():
    x = torch.rand(1, 3, 32, 32, generator=gen(0), dtype=D)
    blur = SeparableBlur(gaussian_kernel(9, 3.0))  # 1-D singulars down to ~1e-5: 2-D products thresholded
    s = blur.singulars(x.shape, dtype=D)
    assert (s == 0).any()
    y = blur.A(x)
    p = blur.pinv(y)
    assert torch.isfinite(p).all()
    assert rel(blur.A(p), y) <= 1e-4
    box = CircularBlur(torch.full((2, 2), 0.25, dtype=D))  # exact zeros at the Nyquist frequencies
    assert (box.spectrum(8, 8, dtype=D).abs() < 1e-12).any()
    for dtype in (torch.float32, D):
        assert torch.isfinite(box.pinv(box.A(x[..., :8, :8].to(dtype)))).all()


def test_regression_ddrm_gaussian_and_bicubic_taps():
    # DDRM/CM4IR deblur_gauss: 5 taps exp(-x^2 / 200), x = -2..2, normalised (numpy, computed independently)
    ref_gauss = [0.19800304154192314, 0.2009954743028551, 0.2020029683104434, 0.2009954743028551, 0.19800304154192314]
    torch.testing.assert_close(gaussian_kernel(5, 10.0), torch.tensor(ref_gauss, dtype=D), rtol=0, atol=1e-15)
    # DDRM sr_bicubic4: 16 Keys taps (a = -0.5) at x = (i - 8 + 0.5) / 4, normalised (numpy, computed independently)
    half = [-0.001708984375, -0.010986328125, -0.018310546875, -0.011962890625]
    half += [0.022705078125, 0.097412109375, 0.181884765625, 0.240966796875]
    torch.testing.assert_close(bicubic_kernel(4), torch.tensor(half + half[::-1], dtype=D), rtol=0, atol=1e-15)
    torch.testing.assert_close(uniform_kernel(9), torch.full((9,), 1 / 9, dtype=D))


# ----- masks and kernels --------------------------------------------------------------------------------------
def test_random_mask_fraction_is_missing_share_and_seeded():
    m = random_mask((20, 10), 0.8, gen(5))
    assert m.dtype == torch.bool and m.shape == (20, 10)
    assert int((~m).sum()) == 160  # 80 % missing
    assert torch.equal(m, random_mask((20, 10), 0.8, gen(5)))
    assert not torch.equal(m, random_mask((20, 10), 0.8, gen(6)))


def test_box_mask():
    m = box_mask((3, 8, 10), (2, 3, 4, 5))
    assert m.shape == (3, 8, 10)
    assert (~m[:, 2:6, 3:8]).all() and int((~m).sum()) == 3 * 20


def test_mask_from_image(tmp_path):
    from PIL import Image

    mask = random_mask((9, 11), 0.3, gen(0))
    Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(tmp_path / "m.png")
    assert torch.equal(mask_from_image(tmp_path / "m.png"), mask)
    np.save(tmp_path / "m.npy", mask.numpy().astype(np.float32) * 0.5)
    assert torch.equal(mask_from_image(tmp_path / "m.npy"), mask)


def test_motion_kernel_normalised_centred_and_seeded():
    idx = torch.arange(15, dtype=D)
    for intensity in (0.0, 0.5, 1.0):
        k = motion_kernel(15, intensity, gen(7))
        assert k.shape == (15, 15) and (k >= 0).all()
        assert float(k.sum()) == pytest.approx(1.0)
        assert float((k.sum(1) * idx).sum()) == pytest.approx(7.0)  # centroid = centre pixel
        assert float((k.sum(0) * idx).sum()) == pytest.approx(7.0)
        assert torch.equal(k, motion_kernel(15, intensity, gen(7)))
    assert not torch.equal(motion_kernel(15, 0.5, gen(7)), motion_kernel(15, 0.5, gen(8)))
    # intensity 0 is a straight (linear-motion) path: the kernel's covariance is nearly rank one
    k = motion_kernel(31, 0.0, gen(9))
    rr, cc = torch.meshgrid(torch.arange(31, dtype=D), torch.arange(31, dtype=D), indexing="ij")
    pts = torch.stack([rr.flatten() - 15, cc.flatten() - 15])
    eig = torch.linalg.eigvalsh((pts * k.flatten()) @ pts.T)
    assert eig[0] < 0.05 * eig[1]


# ----- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: AveragePoolSR(4).A(torch.zeros(1, 3, 17, 16)), ValueError, r"x: image height 17 .*factor 4"),
        (lambda: BicubicSR(2).A(torch.zeros(1, 3, 16, 15)), ValueError, r"x: image width 15 .*multiple of 2"),
        (lambda: AveragePoolSR(0), ValueError, r"factor: expected an integer >= 1, got 0"),
        (lambda: BicubicSR(2.5), ValueError, r"factor: .* got 2.5"),
        (lambda: SeparableBlur(torch.ones(4) / 4), ValueError, r"kernel_h: expected a 1-D kernel of odd length"),
        (lambda: SeparableBlur(torch.ones(3), torch.ones(2, 2)), ValueError, r"kernel_w: .*got shape \(2, 2\)"),
        (lambda: SeparableBlur(torch.ones(3), zero_threshold=2.0), ValueError, r"zero_threshold"),
        (
            lambda: Inpainting(torch.ones(8, 8, dtype=torch.bool)).A(torch.zeros(1, 3, 8, 9)),
            ValueError,
            r"x: image size \(H, W\) = \(8, 9\) does not match the mask size \(8, 8\)",
        ),
        (
            lambda: Inpainting(torch.ones(3, 8, 8, dtype=torch.bool)).A(torch.zeros(1, 1, 8, 8)),
            ValueError,
            r"x: 1 channel\(s\) given but the mask has 3",
        ),
        (lambda: Inpainting(torch.ones(8)), ValueError, r"mask: expected shape .* got \(8,\)"),
        (lambda: Colorization().A(torch.zeros(1, 1, 4, 4)), ValueError, r"x: Colorization expects 3 \(RGB\).*got 1"),
        (lambda: Colorization().At(torch.zeros(1, 3, 4, 4)), ValueError, r"y: .*1 \(grey\) channel, got 3"),
        (
            lambda: CircularBlur(gaussian_kernel_2d(61, 3.0)).A(torch.zeros(1, 3, 32, 32)),
            ValueError,
            r"x: image size \(H, W\) = \(32, 32\) is smaller than the kernel \(61, 61\)",
        ),
        (lambda: CircularBlur(torch.ones(5)), ValueError, r"kernel: expected a 2-D"),
        (lambda: Identity().A(torch.zeros(3, 4, 4)), ValueError, r"x: expected a tensor of shape \(B, C, H, W\)"),
        (lambda: random_mask((8, 8), 1.2), ValueError, r"fraction: .*missing.* got 1.2"),
        (lambda: random_mask((8,), 0.5), ValueError, r"shape: expected \(H, W\) or \(C, H, W\)"),
        (lambda: box_mask((8, 8), (6, 0, 4, 4)), ValueError, r"box: .*inside the image \(H, W\) = \(8, 8\)"),
        (lambda: motion_kernel(15, 1.5), ValueError, r"intensity: expected a float in \[0, 1\], got 1.5"),
        (lambda: motion_kernel(2, 0.5), ValueError, r"size: expected an integer >= 3, got 2"),
        (lambda: gaussian_kernel(5, 0.0), ValueError, r"std: expected a positive"),
        (lambda: mask_from_image("/nonexistent/mask.png"), FileNotFoundError, r"path: no mask file"),
    ],
)
def test_error_messages(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
