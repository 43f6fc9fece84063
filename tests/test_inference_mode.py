"""Samplers run under torch.inference_mode (DPS excepted); operator caches built there still serve DPS."""

import pytest
import torch

from zsir import units
from zsir.priors.denoiser import DenoiserPrior
from zsir.samplers import SAMPLERS
from zsir.tasks import parse_task

PRIOR = DenoiserPrior(lambda x, s: x * 0.9, sigma_max=1.0, name="shrink")


def _restore(name: str, op, y: torch.Tensor, seed: int) -> torch.Tensor:
    sampler = SAMPLERS.get(name)(PRIOR, steps=3, progress=False)
    sigma = units.sigma_to_model(torch.full((y.shape[0], 1, 1, 1), 0.05))
    return sampler(y, op, sigma, torch.Generator().manual_seed(seed))


def _cached(op) -> list[torch.Tensor]:
    found, todo = [], [v for m in op.modules() for k, v in vars(m).items() if k not in ("_parameters", "_modules")]
    while todo:
        v = todo.pop()
        if isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, (list, tuple)):
            todo.extend(v)
        elif isinstance(v, torch.Tensor):
            found.append(v)
    return found


@pytest.mark.parametrize("task", ["sr2", "deblur-motion"])
def test_one_operator_serves_cm4ir_then_dps_then_cm4ir_like_fresh_ones(task):
    """The caches (SVD factors, spectra) are first built inside CM4IR's inference mode; DPS differentiates through
    the same operator afterwards, and every result equals the one of a fresh operator."""
    task = parse_task(task)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = task.operator((64, 64), seed=0).A(x)  # another object: `shared` has no cache yet
    shared = task.operator((64, 64), seed=0)
    before = {t.data_ptr() for t in _cached(shared)}  # the kernel taps only
    first = _restore("cm4ir", shared, y, 0)
    assert not first.is_inference()
    built = [t for t in _cached(shared) if t.data_ptr() not in before]
    assert built and not any(t.is_inference() for t in built)
    dps = _restore("dps", shared, y, 1)
    again = _restore("cm4ir", shared, y, 0)
    torch.testing.assert_close(first, _restore("cm4ir", task.operator((64, 64), seed=0), y, 0), rtol=0, atol=0)
    torch.testing.assert_close(dps, _restore("dps", task.operator((64, 64), seed=0), y, 1), rtol=0, atol=0)
    torch.testing.assert_close(again, first, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:plain DDNM ignores sigma_y")
def test_non_differentiating_samplers_run_in_inference_mode_and_dps_does_not():
    seen = {}
    real = PRIOR._denoise

    def spy(x, sigma, **kwargs):
        seen[name] = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())
        return real(x, sigma, **kwargs)

    op = parse_task("sr2").operator((32, 32))
    y = op.A(torch.zeros(1, 3, 32, 32))
    PRIOR._denoise = spy
    try:
        for name in SAMPLERS.names():
            _restore(name, op, y, 0)
    finally:
        del PRIOR._denoise
    assert seen.pop("dps") == (False, True)
    assert seen and all(v == (True, False) for v in seen.values()), seen


@pytest.mark.parametrize("name", ["diffpir", "pnp"])
def test_a_caller_s_own_inference_mode_works_with_fft_operators(name):
    """A measurement made inside the caller's torch.inference_mode() has no version counter; CircularBlur's cache
    of conj(K) FFT(y) must not read it (it raised "Inference tensors do not track version counter")."""
    import zsir

    op = parse_task("deblur-motion").operator((64, 64), seed=0)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    kwargs = dict(sampler=name, prior=PRIOR, sigma_y=0.05, steps=3, generator=0, progress=False)
    expected = zsir.solve(op.A(x), op, **kwargs)
    with torch.inference_mode():
        y = op.A(x)
        assert y.is_inference()
        out = zsir.solve(y, op, **kwargs)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
