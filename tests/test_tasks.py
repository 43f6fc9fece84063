"""The task registry (zsir.tasks): one name, one operator, shared by the CLI, ``zsir bench`` and benchmarks/.

Expected responses are computed here independently: a Gaussian of std 3 px evaluated with numpy, and the two
boundary rules (zero padding loses the light that leaves the image, a periodic blur wraps it around).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from zsir import operators as ops
from zsir.tasks import TASK_NAMES, parse_task

H = W = 64


def _gauss_1d(std: float = 3.0, radius: int = 30) -> np.ndarray:
    g = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * std**2))
    return g / g.sum()


def _response(task: str, at: tuple[int, int]) -> torch.Tensor:
    x = torch.zeros(1, 1, H, W, dtype=torch.float64)
    x[0, 0, at[0], at[1]] = 1.0
    return parse_task(task).operator((H, W)).A(x)[0, 0]


@pytest.mark.parametrize("task", ["deblur-gauss", "deblur-gauss-circular"])
def test_gaussian_tasks_blur_with_std_3(task):
    g = _gauss_1d()
    expected = np.outer(g, g)[30 - 5 : 30 + 6, 30 - 5 : 30 + 6]  # the 11x11 centre of the 61x61 kernel
    out = _response(task, (32, 32)).numpy()[32 - 5 : 32 + 6, 32 - 5 : 32 + 6]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-9)


def test_deblur_gauss_is_zero_padded_and_the_circular_one_wraps():
    sep, circ = _response("deblur-gauss", (0, 0)), _response("deblur-gauss-circular", (0, 0))
    g = _gauss_1d()
    # zero boundary: light leaving the image is lost (only the one-sided half of each 1-D kernel stays)
    kept = g[30:].sum() ** 2
    assert float(sep.sum()) == pytest.approx(kept, rel=1e-6) and abs(float(sep[-1, -1])) < 1e-7
    # periodic boundary: everything stays, and the opposite corner receives g[29]^2 (one pixel away, wrapped)
    assert float(circ.sum()) == pytest.approx(1.0, rel=1e-6)
    assert float(circ[-1, -1]) == pytest.approx(g[29] ** 2, rel=1e-5)


def test_every_listed_task_builds():
    for name in TASK_NAMES:
        if "FILE" in name:
            continue
        op = parse_task(name.replace(":P", ":0.5")).operator((H, W), seed=1)
        assert isinstance(op, ops.LinearOperator), name


def test_random_tasks_draw_from_the_seed():
    a = parse_task("deblur-motion").operator((H, W), seed=3)
    b = parse_task("deblur-motion").operator((H, W), seed=3)
    c = parse_task("deblur-motion").operator((H, W), seed=4)
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.A(x), b.A(x)) and not torch.allclose(a.A(x), c.A(x))
    m = parse_task("inpaint-random:0.8").operator((H, W), seed=0).A(torch.ones(1, 1, H, W))
    assert abs(float((m == 0).double().mean()) - 0.8) < 0.02  # 80 % missing


def test_restoration_benchmark_uses_registry_names():
    path = Path(__file__).parents[1] / "benchmarks" / "restoration.py"
    spec = importlib.util.spec_from_file_location("restoration_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in bench.ALL_TASKS:
        assert type(bench.make_task(name, (H, W))) is type(parse_task(name).operator((H, W))), name
    assert isinstance(bench.make_task("deblur-gauss-circular", (H, W)), ops.CircularBlur)
    assert isinstance(parse_task("deblur-gauss").operator((H, W)), ops.SeparableBlur)
