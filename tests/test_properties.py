"""Property-based tests (Hypothesis) of the operator and image-reading boundaries: shapes, dtypes, ranges, sizes.

Each property is checked on a few dozen generated cases (small ``max_examples``, no deadline) so the file stays
fast (``ZSIR_HYPOTHESIS_EXAMPLES=300`` runs more); the expected values come from definitions (adjoint identity,
shape rules, the [0, 1] convention, exact integer quantisation), not from the code under test.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import zsir
from zsir import io as zio
from zsir import operators as ops

FAST = settings(
    max_examples=int(os.environ.get("ZSIR_HYPOTHESIS_EXAMPLES", 25)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@st.composite
def operator_cases(draw):
    """An operator, an image batch shape it accepts, and a dtype."""
    kind = draw(st.sampled_from(["identity", "bicubic", "avgpool", "sepblur", "circblur", "inpaint", "color"]))
    factor = draw(st.sampled_from([2, 4])) if kind in ("bicubic", "avgpool") else 1
    low = 3 if kind == "circblur" else 1  # a 3x3 circular kernel needs images of at least 3x3
    h = factor * draw(st.integers(low, 6))
    w = factor * draw(st.integers(low, 6))
    b = draw(st.integers(1, 2))
    c = 3 if kind == "color" else draw(st.sampled_from([1, 3]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    if kind == "identity":
        op = ops.Identity()
    elif kind == "bicubic":
        op = ops.BicubicSR(factor)
    elif kind == "avgpool":
        op = ops.AveragePoolSR(factor)
    elif kind == "sepblur":
        op = ops.SeparableBlur(ops.gaussian_kernel(draw(st.sampled_from([1, 3, 5])), 1.0))
    elif kind == "circblur":
        op = ops.CircularBlur(ops.gaussian_kernel_2d(3, 1.0))
    elif kind == "inpaint":
        op = ops.Inpainting(ops.random_mask((h, w), 0.5, generator=gen))
    else:
        op = ops.Colorization()
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return op, (b, c, h, w), dtype, seed


@FAST
@given(operator_cases())
def test_operator_shapes_adjoint_and_range(case):
    op, shape, dtype, seed = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)
    y = op.A(x)
    assert tuple(y.shape) == tuple(op.y_shape(shape)) and op.x_shape(tuple(y.shape)) == tuple(shape)
    assert y.dtype == dtype and torch.isfinite(y).all()
    v = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(dtype)
    lhs, rhs = float((y * v).sum()), float((x * op.At(v)).sum())
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert abs(lhs - rhs) <= tol * (abs(lhs) + abs(rhs) + 1)  # <A x, v> = <x, A^T v>
    # images in [0, 1] give measurements well inside the range zsir.solve accepts (|y| <= 4 max|A(1)| + 1)
    ones = op.ones_image(shape, dtype=dtype)
    assert float(y.abs().max()) <= 1.25 * max(1.0, float(ones.abs().max()))


@FAST
@given(operator_cases(), st.integers(1, 3))
def test_operators_reject_images_of_the_wrong_size(case, extra):
    op, (b, c, h, w), _, _ = case
    if isinstance(op, (ops.Identity, ops.Colorization, ops.SeparableBlur, ops.CircularBlur)):
        return  # these take any size
    bad = (b, c, h + extra, w)  # not a multiple of the factor / not the mask's size
    if isinstance(op, (ops.BicubicSR, ops.AveragePoolSR)) and (h + extra) % op.factor == 0:
        return
    with pytest.raises(ValueError):
        op.y_shape(bad)


@FAST
@given(operator_cases(), st.floats(20.0, 1000.0))
def test_solve_rejects_measurements_scaled_beyond_the_operator_range(case, scale):
    op, shape, _, seed = case
    x = 0.2 + 0.8 * torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    with pytest.raises(ValueError, match="^y: values up to"):
        zsir.solve(op.A(x) * scale, op, sampler="pnp", steps=1, progress=False)


SHAPES = st.tuples(st.integers(1, 9), st.integers(1, 9))


@st.composite
def npy_images(draw):
    """An array in one of the documented layouts, and the (H, W, C) image it holds.

    Channels-first layouts get a width outside {1, 3}: an (C, H, W) array whose last axis is 1 or 3 reads as
    (H, W, C) by the reader's documented rule, so such arrays are not a property of the layout.
    """
    layout = draw(st.sampled_from(["hw", "hwc", "chw", "bchw"]))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9) if layout in ("hw", "hwc") else st.sampled_from([2, 4, 5, 6, 7, 8, 9]))
    c = draw(st.sampled_from([1, 3]))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64]))
    elements = None if np.issubdtype(dtype, np.integer) else st.floats(-0.125, 1.125, width=32)
    if layout == "hw":
        c = 1
        hwc = draw(arrays(dtype, (h, w, 1), elements=elements))
        return hwc[..., 0], hwc
    hwc = draw(arrays(dtype, (h, w, c), elements=elements))
    chw = np.ascontiguousarray(np.moveaxis(hwc, -1, 0))
    return {"hwc": hwc, "chw": chw, "bchw": chw[None]}[layout], hwc


@FAST
@given(npy_images())
def test_npy_reading_shapes_dtypes_and_scaling(tmp_path_factory, case):
    arr, hwc = case
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    np.save(path, arr)
    x = zio.read_image(path)
    h, w, c = hwc.shape
    assert tuple(x.shape) == (1, c, h, w) and x.dtype == torch.float32
    top = {np.uint8: 255.0, np.uint16: 65535.0}.get(arr.dtype.type, 1.0)
    expected = torch.from_numpy(np.moveaxis(hwc.astype(np.float64) / top, -1, 0))[None].float()
    assert torch.equal(x, expected)
    if top > 1:
        assert float(x.min()) >= 0 and float(x.max()) <= 1


@FAST
@given(st.sampled_from([np.int32, np.bool_, np.complex64]), SHAPES)
def test_npy_of_other_dtypes_is_refused_naming_the_file(tmp_path_factory, dtype, size):
    path = tmp_path_factory.mktemp("npy") / "bad.npy"
    np.save(path, np.zeros(size, dtype=dtype))
    with pytest.raises(ValueError, match="bad.npy"):
        zio.read_image(path)


@FAST
@given(SHAPES, st.sampled_from([1, 3]), st.sampled_from([8, 16]), st.integers(0, 2**16))
def test_png_round_trip_is_exact_on_the_quantisation_grid(tmp_path_factory, size, c, bits, seed):
    top = 2**bits - 1
    levels = torch.randint(0, top + 1, (1, c, *size), generator=torch.Generator().manual_seed(seed))
    x = levels.double() / top
    path = tmp_path_factory.mktemp("png") / "x.png"
    zio.write_image(path, x, bit_depth=bits)
    back = zio.read_image(path, dtype=torch.float64)
    assert back.shape == x.shape and torch.equal(torch.round(back * top), levels.double())


@FAST
@given(SHAPES, st.floats(-10.0, 10.0), st.floats(-10.0, 10.0))
def test_written_images_are_clamped_to_0_1(tmp_path_factory, size, lo, hi):
    x = torch.linspace(min(lo, hi), max(lo, hi), size[0] * size[1]).reshape(1, 1, *size)
    path = tmp_path_factory.mktemp("clamp") / "x.png"
    zio.write_image(path, x)
    back = zio.read_image(path)
    assert torch.allclose(back, x.clamp(0, 1), atol=0.5 / 255 + 1e-6)


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_read_as_an_image_silently(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("junk") / "x.png"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="x.png"):
        zio.read_image(path)
