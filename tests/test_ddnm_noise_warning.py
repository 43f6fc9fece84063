"""Plain DDNM ignores the measurement noise: it must say so (once per run) and point to DDNM+."""

from __future__ import annotations

import warnings

import torch

from zsir import operators
from zsir.priors.base import Prior
from zsir.samplers import SAMPLERS


class Shrink(Prior):
    """Exact MMSE denoiser of N(0, 0.25 I)."""

    channels, sigma_max = 1, float("inf")

    def _denoise(self, x, sigma, **kw):
        return 0.25 * x / (0.25 + sigma**2)


def _run(name: str, sigma_y: list[float]) -> list[warnings.WarningMessage]:
    op = operators.AveragePoolSR(2)
    y = op.A(0.5 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    sig = torch.tensor(sigma_y, dtype=torch.float64).reshape(-1, 1, 1, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SAMPLERS.get(name)(Shrink(), steps=5, progress=False)(y, op, sig, torch.Generator().manual_seed(1))
    return [w for w in caught if "DDNM" in str(w.message)]


def test_plain_ddnm_with_noisy_measurements_warns_once_and_names_ddnm_plus():
    caught = _run("ddnm", [0.0, 0.1])  # one noisy sample in the batch is enough
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert issubclass(caught[0].category, UserWarning) and "'ddnm+'" in str(caught[0].message)


def test_no_warning_without_noise_or_with_ddnm_plus():
    assert _run("ddnm", [0.0, 0.0]) == []
    assert _run("ddnm+", [0.1, 0.1]) == []
