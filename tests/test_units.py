"""Round trips of every conversion in zsir.units (the one place that converts conventions)."""

import math

import numpy as np
import pytest
import torch

from zsir import units
from zsir.operators import MatrixOperator


def test_image_round_trip():
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    xm = units.image_to_model(x)
    assert xm.min() >= -1 and xm.max() <= 1
    torch.testing.assert_close(units.model_to_image(xm), x)
    torch.testing.assert_close(units.image_to_model(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))


def test_sigma_round_trip():
    assert units.sigma_to_model(0.05) == pytest.approx(0.1)
    assert units.sigma_to_image(units.sigma_to_model(0.0371)) == pytest.approx(0.0371)


def test_vp_ve_round_trip():
    abar = torch.tensor(0.3, dtype=torch.float64)
    x0 = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    eps = torch.randn_like(x0)
    x_vp = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    x_ve = units.vp_to_ve(x_vp, abar)
    # VE form: x0 + sigma eps with sigma = sqrt(1 - abar) / sqrt(abar)
    torch.testing.assert_close(x_ve, x0 + units.sigma_from_abar(abar) * eps)
    torch.testing.assert_close(units.ve_to_vp(x_ve, abar), x_vp)
    assert units.abar_from_sigma(units.sigma_from_abar(0.3)) == pytest.approx(0.3)
    assert units.sigma_from_abar(0.5) == pytest.approx(1.0)
    assert math.isclose(units.vp_to_ve(torch.tensor(2.0), 0.25).item(), 4.0)


def test_measurement_round_trip_is_exact_for_inpainting_like_operators():
    # A 1 != 1 for a selection matrix: the conversion must use A(1), not 2y - 1.
    sel = torch.zeros(3, 6, dtype=torch.float64)
    sel[0, 0] = sel[1, 2] = sel[2, 5] = 1.0
    op = MatrixOperator(sel, (1, 2, 3))
    x = torch.rand(2, 1, 2, 3, dtype=torch.float64)
    ones = op.ones_image((2, 1, 2, 3), dtype=torch.float64)
    y_model = units.measurement_to_model(op.A(x), ones)
    torch.testing.assert_close(y_model, op.A(units.image_to_model(x)))
    torch.testing.assert_close(units.measurement_to_image(y_model, ones), op.A(x))


def test_as_sigma_shapes_and_errors():
    s = units.as_sigma(0.1, 3)
    assert s.shape == (3, 1, 1, 1) and torch.allclose(s, torch.full_like(s, 0.1))
    s = units.as_sigma([0.1, 0.2], 2, dtype=torch.float64)
    assert s.flatten().tolist() == pytest.approx([0.1, 0.2])
    with pytest.raises(ValueError, match="sigma_y: expected a float or 3 values"):
        units.as_sigma([0.1, 0.2], 3, name="sigma_y")
    with pytest.raises(ValueError, match=r"sigma_y: expected values in \[0.0, 1.0\]"):
        units.as_sigma(1.5, 1, name="sigma_y", high=1.0)
    with pytest.raises(ValueError, match="finite"):
        units.as_sigma(float("nan"), 1)


def test_8bit_round_trip():
    assert units.sigma_to_8bit(0.05) == pytest.approx(12.75)
    assert units.sigma_from_8bit(49.0) == pytest.approx(0.192156862745098)  # DPIR's 49/255
    assert units.sigma_from_8bit(units.sigma_to_8bit(0.0371)) == pytest.approx(0.0371)


def test_timestep_from_sigma_inverts_the_table():
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # the DDPM linear table (Ho et al. 2020)
    table = units.sigma_from_abar(abar)
    assert table.shape == (1000,) and table[0] == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)))
    t = np.array([0, 1, 112, 500, 999])
    np.testing.assert_array_equal(units.timestep_from_sigma(table[t], table), t)
    assert units.timestep_from_sigma(0.0, table) == 0 and units.timestep_from_sigma(1e6, table) == 999
    # halfway between two levels the nearer one wins; numpy arrays and tensors agree
    mid = 0.49 * table[112] + 0.51 * table[113]
    assert units.timestep_from_sigma(mid, table) == 113
    assert units.timestep_from_sigma(torch.tensor([mid]), torch.from_numpy(table)).tolist() == [113]
