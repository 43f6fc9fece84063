"""The memory estimate and plan: a measured upper bound per sampler, tile shrinking, refusals that name options."""

import pytest
import torch

import zsir
from zsir import memory
from zsir.priors.denoiser import DenoiserPrior
from zsir.samplers import SAMPLERS
from zsir.tasks import parse_task


def test_peak_counter_follows_allocations_and_frees():
    with memory.peak_bytes() as m:
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2  # 8000 live
        c = b.view(10, 100) + 1  # 12000 live (a view shares its storage)
        del a, b
        d = c * 3  # 8000 live
        assert m.current == 8000
    assert m.peak == 12000 and d.shape == (10, 100)


@pytest.mark.parametrize("task", ["sr2", "deblur-gauss", "inpaint-box"])
def test_estimate_bounds_the_measured_peak_of_every_sampler(task):
    """Measured with a pointwise prior (no network memory): the peak of solve() plus what the operator holds lies
    under the estimate (under the estimate without the fixed scratch space where no pixel is unobserved: only
    CM4IR's median fill of holes uses it), and the estimate is at most 3x that plus the scratch space (so it does
    not refuse what fits)."""
    prior = DenoiserPrior(lambda x, s: x * 0.9, sigma_max=1.0, name="shrink")
    op = parse_task(task).operator((48, 48), seed=0)
    y = op.A(torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0)))
    for name in SAMPLERS.names():
        with memory.peak_bytes() as m:
            res = zsir.solve(y, op, sampler=name, prior=prior, steps=3, generator=0, progress=False,
                             return_result=True, num_samples=2)  # fmt: skip
        used = m.peak + memory.operator_bytes(op)  # the operator's caches were built before, by op.A
        est, work = res.tiling["estimate"], SAMPLERS.get(name).work_bytes
        assert used <= est - (work if task != "inpaint-box" else 0) and est <= 3 * used + work, (name, used, est)


def test_plan_shrinks_the_tile_of_a_convolutional_prior_to_fit():
    prior = zsir.load_prior("builtin")
    op = parse_task("sr2").operator((2000, 2000))
    sampler = SAMPLERS.get("cm4ir")
    roomy = memory.plan(prior, sampler, op, (1, 3, 2000, 2000), 1, max_memory=100)
    assert roomy.tile == 512 and roomy.overlap == 64 and roomy.budget_source == "max_memory"
    tight_gb = (memory.estimate(prior, sampler, op, (1, 3, 2000, 2000), 1, 128) + 1) / 1e9
    tight = memory.plan(prior, sampler, op, (1, 3, 2000, 2000), 1, max_memory=tight_gb)
    assert tight.tile == 128 and tight.estimate <= tight.budget


def test_refusal_names_the_estimate_and_the_options_that_fit():
    prior = zsir.load_prior("builtin")
    op = parse_task("sr2").operator((3000, 2000))
    sampler = SAMPLERS.get("rdmd")
    with pytest.raises(
        memory.MemoryBudgetError, match=r"needs about .* GB .*Options that fit: a smaller batch: at most 1"
    ):
        memory.plan(prior, sampler, op, (4, 3, 3000, 2000), 1, max_memory=2.0)
    with pytest.raises(memory.MemoryBudgetError, match=r"--max-memory \d"):
        memory.plan(prior, sampler, op, (1, 3, 3000, 2000), 1, max_memory=0.1)
    with pytest.raises(ValueError, match="max_memory: expected a positive number"):
        memory.plan(prior, sampler, op, (1, 3, 30, 20), 1, max_memory=-1)


def test_builtin_prior_peak_per_call_is_under_its_estimate():
    prior = zsir.load_prior("builtin")
    bpp = prior.bytes_per_pixel()
    x = torch.zeros(1, 3, 96, 80)
    with torch.no_grad(), prior.use_tiling(0), memory.peak_bytes() as m:
        prior.denoise(x, 0.3)
    assert m.peak <= memory.MARGIN * bpp * 96 * 80
    assert m.peak >= 0.5 * bpp * 96 * 80  # linear in the pixels: the probe size does not matter much


def test_a_prior_that_cannot_be_probed_alone_gets_the_conservative_fallback():
    from zsir.priors.base import PROBE_FALLBACK, Prior

    class NeedsBatch4(Prior):
        def _denoise(self, x, sigma, **kwargs):
            if x.shape[0] != 4:
                raise ValueError("class_labels: expected an int or 1 labels, got 4")
            return x

    p = NeedsBatch4()
    assert p.bytes_per_pixel() == PROBE_FALLBACK and p.bytes_per_pixel(grad=True) == 4 * PROBE_FALLBACK


def test_refusing_an_untiled_request_offers_the_tiling_that_fits():
    prior = zsir.load_prior("builtin")
    op = parse_task("sr2").operator((3000, 2000))
    with pytest.raises(memory.MemoryBudgetError, match=r"Options that fit: tiles of 512 px, zsir's choice without"):
        memory.plan(prior, SAMPLERS.get("cm4ir"), op, (1, 3, 3000, 2000), 1, tile=0, max_memory=4.0)


def test_default_tile_does_not_depend_on_the_free_memory(monkeypatch):
    """Without max_memory the tile is the prior's default whatever the machine's load; when the default does not
    fit the available memory zsir refuses and names the tile and the --max-memory that fit (never shrinks)."""
    prior = zsir.load_prior("builtin")
    op = parse_task("sr2").operator((2000, 2000))
    sampler = SAMPLERS.get("cm4ir")
    shape = (1, 3, 2000, 2000)
    default = memory.estimate(prior, sampler, op, shape, 1, 512)
    small = memory.estimate(prior, sampler, op, shape, 1, 256)
    assert small < default
    for free in (10**12, default + 1):
        monkeypatch.setattr(memory, "available_bytes", lambda device="cpu", free=free: free)
        got = memory.plan(prior, sampler, op, shape, 1)
        assert (got.tile, got.overlap, got.budget_source) == (512, 64, "available")
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": (default + small) // 2)
    with pytest.raises(memory.MemoryBudgetError, match=r"available memory.*--tile 256.*--max-memory \d"):
        memory.plan(prior, sampler, op, shape, 1)
    assert memory.plan(prior, sampler, op, shape, 1, max_memory=(default + small) / 2e9).tile == 256
