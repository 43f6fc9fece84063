"""Sampler overhead: wall time / (NFE x prior forward time), for every registered sampler.

A ratio of 1.0 means the sampler costs exactly its network calls; everything above is the sampler's own work
(operator applications, pseudo-inverses, noise, bookkeeping). Goal: <= 1.05 for samplers that only call the
prior forward; DPS differentiates through the prior, so its ratio includes the backward pass (~3x).

Setting: 256x256 RGB, batch 4, CPU, operator ``BicubicSR(4)``, sigma_y = 0.05, and one of two priors:
``--prior conv`` (default), a deliberately cheap conv net (4 conv layers, 32 channels) wrapped as a
:class:`~zsir.priors.DenoiserPrior`, which exposes the sampler's own work; ``--prior builtin``, the shipped
built-in prior (the cheapest real network a user runs; its ``sigma_max`` truncates the schedules, so NFE is
lower). The forward time is the time actually spent inside ``prior.denoise`` during the sampler's own run (so load
drift on the shared machine affects numerator and denominator alike); ``fwd ms`` is that time per call.

Run::

    nice .venv/bin/python benchmarks/overhead.py [--prior conv|builtin] [--size 256] [--batch 4] [--threads 2]

``--vs-deepinv`` measures instead the per-step work outside the prior of DiffPIR, side by side with deepinv's
``DiffPIR`` in the same process (if ``deepinv`` is installed; it is not a zsir dependency): 50 steps, batch 4,
256x256, sigma_y 0.05, a toy prior that sleeps 20 ms per call (so both spend exactly the same in it), for a
circular Gaussian blur (61x61, std 3; deepinv ``BlurFFT``) and bicubic x4 SR (deepinv ``Downsampling``).
Reported per step, medians of ``--repeats`` runs after the first: wall time outside the prior (wall - wall time
inside the prior) / steps, and the same in process CPU time (``time.process_time``: all threads; the sleep costs
none). On a shared machine the CPU column is the robust one: waiting for a core adds wall time, not CPU time. With
``--threads 1`` it is the work itself. The last column counts minor page faults per step (zsir / deepinv): glibc
hands freed multi-MB tensors back to the kernel and faults fresh pages in on the next allocation, which costs CPU
time (kernel side) and varies from run to run with the heap's state; ``MALLOC_TRIM_THRESHOLD_=1073741824
MALLOC_MMAP_THRESHOLD_=33554432`` in the environment (glibc) keeps freed memory and removes that noise for both::

    nice .venv/bin/python benchmarks/overhead.py --vs-deepinv --threads 1
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time

import torch
from torch import nn

from zsir import units
from zsir.models.builtin import load_shipped
from zsir.operators import CircularBlur, gaussian_kernel_2d
from zsir.operators.separable import BicubicSR
from zsir.priors.denoiser import DenoiserPrior
from zsir.samplers import SAMPLERS

STEPS = {"rdmd": 10, "cm4ir": 4, "ddrm": 10, "ddnm": 10, "diffpir": 10, "dps": 5, "pnp": 8}


class ConvNet(nn.Module):
    """Residual 4-layer conv net ``x - net(x)``; ignores sigma (only the cost matters here)."""

    def __init__(self, channels: int = 3, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, x, sigma):
        return x - 0.1 * self.body(x)


class TimedPrior(DenoiserPrior):
    """A :class:`DenoiserPrior` that accumulates the wall time spent inside ``denoise``."""

    spent = 0.0

    def denoise(self, x, sigma, **kwargs):
        t0 = time.perf_counter()
        out = super().denoise(x, sigma, **kwargs)
        self.spent += time.perf_counter() - t0
        return out


class SleepDenoiser(nn.Module):
    """A toy denoiser costing a fixed ``seconds`` per call: ``0.9 x`` after a sleep; counts its wall and CPU time."""

    def __init__(self, seconds: float = 0.02):
        super().__init__()
        self.seconds, self.spent, self.cpu = seconds, 0.0, 0.0

    def forward(self, x, sigma):
        t0, c0 = time.perf_counter(), time.process_time()
        time.sleep(self.seconds)
        out = 0.9 * x
        self.spent += time.perf_counter() - t0
        self.cpu += time.process_time() - c0
        return out


def per_step(run, net: SleepDenoiser, steps: int) -> tuple[float, float, float]:
    """``run()``'s wall and CPU seconds outside ``net`` and minor page faults, per step (CPU: all threads)."""
    net.spent = net.cpu = 0.0
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return (wall - net.spent) / steps, (cpu - net.cpu) / steps, faults / steps


def vs_deepinv(args) -> None:
    """Per-step work outside the prior: zsir DiffPIR against deepinv DiffPIR (module docstring)."""
    import zsir

    try:
        import deepinv as dinv
    except ImportError:
        dinv = None
    steps, B, n, nan = 50, args.batch, args.size, math.nan
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, n, n, generator=g)
    kernel = gaussian_kernel_2d(61, 3.0)
    cases = {"circular Gaussian blur": CircularBlur(kernel), "bicubic SR x4": BicubicSR(4)}
    print(f"DiffPIR {steps} steps, batch {B}x3x{n}x{n}, sigma_y 0.05, toy prior 20 ms/call, {args.threads} threads")
    print(f"deepinv {dinv.__version__ if dinv else 'not installed'}, torch {torch.__version__}")
    print("| operator | zsir wall ms/step | deepinv | ratio | zsir CPU ms/step | deepinv | ratio | faults/step |")
    print("|---|---|---|---|---|---|---|---|")
    for label, op in cases.items():
        y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, generator=g)
        net = SleepDenoiser()
        prior = DenoiserPrior(net, sigma_max=100.0, name="sleep20ms")

        def run_zsir(prior=prior, y=y, op=op):
            zsir.solve(y, op, sampler="diffpir", prior=prior, steps=steps, sigma_y=0.05, generator=0, progress=False)

        run_dinv = None
        if dinv is not None:
            noise = dinv.physics.GaussianNoise(sigma=0.05)
            if label.startswith("circular"):
                physics = dinv.physics.BlurFFT(img_size=(3, n, n), filter=kernel[None, None].float(), noise_model=noise)
            else:
                physics = dinv.physics.Downsampling(img_size=(3, n, n), filter="bicubic", factor=4, noise_model=noise)
            model = dinv.sampling.DiffPIR(net, dinv.optim.data_fidelity.L2(), sigma=0.05, max_iter=steps)

            def run_dinv(model=model, y=y, physics=physics):
                with torch.no_grad():
                    model(y, physics, seed=1)

        ours, theirs = [], []
        for _ in range(args.repeats):  # alternate, so load drift hits both alike; the first round warms caches
            ours.append(per_step(run_zsir, net, steps))
            if run_dinv is not None:
                theirs.append(per_step(run_dinv, net, steps))
        # medians of the runs after the first: wall, CPU, page faults
        a, b = ([statistics.median(t[i] for t in r[1:] or r) if r else nan for i in range(3)] for r in (ours, theirs))
        cells = [f"{a[i] * 1e3:.1f} | {b[i] * 1e3:.1f} | {b[i] / a[i]:.2f}" for i in range(2)]
        print(f"| {label} | {' | '.join(cells)} | {a[2]:.0f} / {b[2]:.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=int, default=32, help="conv-net width (forward cost grows ~ width^2)")
    ap.add_argument("--prior", choices=["conv", "builtin"], default="conv")
    ap.add_argument("--vs-deepinv", action="store_true", help="DiffPIR per-step overhead next to deepinv's")
    ap.add_argument("--repeats", type=int, default=4, help="runs per case of --vs-deepinv (median, first dropped)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.vs_deepinv:
        return vs_deepinv(args)

    if args.prior == "builtin":
        net = load_shipped()
        prior = TimedPrior(net, sigma_max=net.config.sigma_max, multiple=net.config.multiple, name="zsir-builtin")
    else:  # sigma_max 100 covers every schedule: no start truncation
        prior = TimedPrior(ConvNet(width=args.width), sigma_max=100.0, name=f"conv4x{args.width}")
    op = BicubicSR(4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    sigma = torch.full((args.batch, 1, 1, 1), 0.05)
    y = op.A(units.image_to_model(x))
    y = y + units.sigma_to_model(sigma) * torch.randn(y.shape, generator=g)

    shape = f"{args.batch}x3x{args.size}x{args.size}"
    print(f"prior: {prior.name}, batch {shape}, {args.threads} threads, operator BicubicSR(4), sigma_y 0.05")
    print(f"{'sampler':<10}{'steps':>6}{'NFE':>6}{'fwd ms':>8}{'wall s':>10}{'NFE x fwd s':>13}{'ratio':>8}")
    for name in SAMPLERS.names():
        cls = SAMPLERS.get(name)
        steps = STEPS.get(name, 10)
        sampler = cls(prior, steps=steps, progress=False)
        sampler(y, op, units.sigma_to_model(sigma), torch.Generator().manual_seed(1))  # warm-up (caches)
        prior.spent = 0.0
        t0 = time.perf_counter()
        sampler(y, op, units.sigma_to_model(sigma), torch.Generator().manual_seed(0))
        wall = time.perf_counter() - t0
        ideal = prior.spent  # = NFE x forward time, measured in this very run
        t_fwd = ideal / sampler.nfe
        print(f"{name:<10}{steps:>6}{sampler.nfe:>6}{t_fwd * 1e3:>8.0f}{wall:>10.2f}{ideal:>13.2f}{wall / ideal:>8.3f}")


if __name__ == "__main__":
    main()
