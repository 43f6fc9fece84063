"""Schedules of RDMD (rdmd.md 1.2) and CM4IR (cm4ir.md 1.2) against the lists printed in the specifications."""

from __future__ import annotations

import numpy as np
import pytest
from spec_values import CM4IR_TAUS

from zsir.samplers.rdmd import rdmd_det_timesteps, rdmd_timesteps, rdmd_weights
from zsir.samplers.schedules import (
    cm4ir_taus,
    ddpm_linear_alphas_cumprod,
    mcgdiff_alphas_cumprod,
    mcgdiff_timesteps,
    truncate_to_prior,
)
from zsir.units import sigma_from_abar


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace("\n", " ").replace(",", " ").split()]


# rdmd.md 1.2 (a)
T_K = {
    100: _ints(
        "999, 899, 857, 825, 798, 775, 753, 734, 715, 698, 682, 666, 651, 637, 623, 610, 597, 585, 573, 561, 550, "
        "539, 528, 518, 507, 497, 487, 477, 468, 458, 449, 440, 431, 422, 413, 405, 396, 388, 380, 372, 364, 356, "
        "348, 340, 333, 325, 318, 310, 303, 296, 289, 282, 275, 268, 261, 254, 247, 241, 234, 228, 221, 215, 208, "
        "202, 195, 189, 183, 177, 171, 165, 159, 153, 147, 141, 135, 129, 123, 118, 112, 106, 101, 95, 89, 84, 78, "
        "73, 67, 62, 57, 51, 46, 41, 36, 30, 25, 20, 15, 10, 5, 0"
    ),
    50: _ints(
        "999, 857, 797, 752, 714, 680, 650, 622, 595, 571, 548, 526, 505, 484, 465, 446, 428, 410, 393, 377, 361, "
        "345, 329, 314, 300, 285, 271, 257, 244, 230, 217, 204, 191, 179, 167, 154, 142, 131, 119, 107, 96, 85, 74, "
        "63, 52, 41, 31, 20, 10, 0"
    ),
    20: _ints("999, 770, 675, 602, 541, 487, 438, 393, 351, 311, 274, 239, 205, 172, 141, 111, 82, 54, 26, 0"),
}

# rdmd.md 1.2 (b), sigma_y = 0.05
T_PRIME = {
    100: _ints(
        "112,111,109,108,106,105,103,102,101,99,98,97,95,94,93,92,90,89,88,87,85,84,83,82,81,80,79,77,76,75,74,73,"
        "72,71,70,69,68,67,66,65,64,64,63,62,61,60,59,58,57,57,56,55,54,53,53,52,51,50,50,49,48,47,47,46,45,45,44,"
        "43,43,42,41,41,40,40,39,38,38,37,37,36,36,35,35,34,33,33,32,32,31,31,30,30,30,29,29,28,28,27,27,26"
    ),
    20: _ints("112,105,97,91,84,79,73,68,63,58,54,50,46,43,40,37,34,31,29,26"),
}


@pytest.mark.parametrize("n", [20, 50, 100])
def test_rdmd_stochastic_timesteps(n):
    assert rdmd_timesteps(n) == T_K[n]


@pytest.mark.parametrize("n", [20, 100])
def test_rdmd_deterministic_timesteps(n):
    assert rdmd_det_timesteps(n, 0.05) == T_PRIME[n]


def test_rdmd_deterministic_end_follows_sf_when_it_exceeds_255_sigma_y():
    # the schedule ends at max(sf, 255 sigma_y) / 255: at sigma_y = 0.05 (12.75 / 255) sf 1 and 4 agree ...
    assert rdmd_det_timesteps(100, 0.05, sf=4) == rdmd_det_timesteps(100, 0.05, sf=1) == T_PRIME[100]
    # ... noiseless, sf decides: SR x4 ends at t = 5 (docs/samplers/rdmd.md); sf = 1 ends at 2/255 = 0.0078 in model
    # units, below the smallest level sigma_0 = sqrt(1e-4 / (1 - 1e-4)) = 0.0100, i.e. at t = 0
    sr4, deblur = rdmd_det_timesteps(100, 0.0, sf=4), rdmd_det_timesteps(100, 0.0, sf=1)
    assert sr4[0] == deblur[0] == 112 and sr4[-1] == 5 and deblur[-1] == 0


# rdmd.md 1.2 (c): lambda 20, tau 0.5, sigma_y 0.05 -> (sigma_t, rho_t, step)
WEIGHTS = {0: (157.4, 1.0e-6, 0.976), 50: (1.173, 0.018, 0.959), 90: (0.163, 0.940, 0.509), 98: (0.030, 27.8, 0.035)}


@pytest.mark.parametrize("k", sorted(WEIGHTS))
def test_rdmd_weights_table(k):
    sig = sigma_from_abar(ddpm_linear_alphas_cumprod())[T_K[100][k]]
    sigma_t, rho_ref, step_ref = WEIGHTS[k]
    assert sig == pytest.approx(sigma_t, rel=2e-3, abs=6e-4)
    mu, rho, step = rdmd_weights(20.0, 0.5, 0.05, float(sig))
    assert mu == pytest.approx(0.025)
    assert rho == pytest.approx(rho_ref, rel=0.02)
    assert step == pytest.approx(step_ref, abs=1.5e-3)


def test_rdmd_weights_tau_extremes():
    mu, rho, _ = rdmd_weights(20.0, 1.0, 0.05, 0.5)
    assert mu == 0.0 and rho > 0
    mu, rho, _ = rdmd_weights(20.0, 0.0, 0.05, 0.5)
    assert rho == 0.0 and mu > 0
    mu, rho, _ = rdmd_weights(20.0, 0.5, 0.0, 0.5)  # noiseless: no floor on mu, 1e-3 floor on rho
    assert mu == 0.0 and rho == pytest.approx(20 * 0.5 * 1e-6 / 0.25)


@pytest.mark.parametrize("key", sorted(CM4IR_TAUS))
def test_cm4ir_taus(key):
    assert np.round(cm4ir_taus(*key), 4).tolist() == list(CM4IR_TAUS[key])


def test_cm4ir_taus_more_steps_pile_at_floor():
    assert np.round(cm4ir_taus(250, 0.2, 6), 3).tolist() == [0.694, 0.614, 0.503, 0.322, 0.01, 0.01]


def test_truncate_to_prior():
    levels = [5.0, 2.0, 1.0, 0.5]
    assert truncate_to_prior(levels, float("inf")) == 0
    assert truncate_to_prior(levels, 5.0) == 0
    assert truncate_to_prior(levels, 1.5) == 2
    assert truncate_to_prior(levels, 0.1) == 3  # nothing covered: still run the last step


# offline.md 1.1: the MCGdiff Gaussian-mixture experiment's table and operator-adapted grid
def test_mcgdiff_alphas_cumprod():
    abar = mcgdiff_alphas_cumprod()
    assert abar.shape == (1000,) and abar[0] == 1.0
    betas = 1.0 - abar[1:] / abar[:-1]
    assert betas[0] == pytest.approx(0.02) and betas[-1] == pytest.approx(1e-4)
    assert bool((np.diff(betas) < 0).all())  # descending, as the authors' gmm.py
    assert abar[-1] == pytest.approx(4e-5, rel=0.1)


@pytest.mark.parametrize("steps", [20, 100])
@pytest.mark.parametrize("s, sigma_y", [([0.74, 0.0045], 0.68), ([0.9, 0.5, 0.3, 0.1], 0.05)])
def test_mcgdiff_timesteps(steps, s, sigma_y):
    abar = mcgdiff_alphas_cumprod()
    t = mcgdiff_timesteps(abar, s, sigma_y, steps)
    assert len(t) == steps and t[0] == 999 and t[-1] > 0  # level 0 (t = 0) is left to the samplers' end point
    assert all(a > b for a, b in zip(t, t[1:], strict=False))
    # every step (above sqrt(abar) = 0.01) where the state's noise equals y's noise on a singular value is on the grid
    end = int(np.nonzero(np.sqrt(abar) < 1e-2)[0][0])
    matches = [int(np.abs(sigma_y**2 * abar - (1 - abar) * si**2).argmin()) for si in s]
    assert all(m in t for m in matches if 0 < m < end) and any(0 < m < end for m in matches)
    # below sqrt(abar) = 0.01 the rest is spread evenly up to T - 1; above it the grid is even in sqrt(abar)
    root = np.sqrt(abar[t[::-1]])
    dense = root[root >= 1e-2]
    gaps = -np.diff(np.concatenate([[1.0], dense]))
    assert gaps.max() < 2.5 * np.median(gaps)
