"""MCGdiff Gaussian-mixture benchmark: sliced Wasserstein of every registered sampler to the exact posterior.

The protocol of docs/benchmarks/gmm.md: d_x in {8, 80, 800}, d_y in {1, 2, 4}, 20 problems each
(:func:`zsir.gmm.mcgdiff_problem`), 20 and 100 steps, mean sliced Wasserstein (100 slices) between the sampler's
samples and as many exact posterior samples (2000), reported as ``mean +- 1.96 s / sqrt(n_problems)``, next to the
noise floor (SW between two exact sample sets of the same size) and the prior (SW of prior samples, which ignore
``y``: the score of a sampler that learns nothing from the measurement). The samplers run directly in the
problem's units: each class is built with the :class:`~zsir.priors.exact.GaussianMixturePrior` and called with
``y``, the :class:`~zsir.operators.MatrixOperator` and ``sigma_y`` as model-unit tensors. As in the authors' code,
the diffusion samplers (DDRM, DDNM, DDNM+, DiffPIR, DPS) walk the operator-adapted grid
(:meth:`zsir.gmm.GMMProblem.timesteps`) of the descending-beta table; DDRM, DDNM and DPS use ``eta`` 0.6 at 20
steps and 0.85 at 100 (DPS: the scale of its DDPM noise), and DPS the authors' step ``0.1 grad ||r||^2 / ||r||``
(``zeta = 0.2``). RDMD walks its own quad spacing of the same table and makes 2 prior calls per step; CM4IR's
schedule is tuned per NFE count (docs/samplers/cm4ir.md), so it always runs its own 4 steps; PnP its DPIR levels.

Usage::

    python benchmarks/gmm.py --quick                      # smoke run: d_x 8, 5 problems, 200 samples
    nice python benchmarks/gmm.py --out gmm.md            # the full table (hours on 2 CPU cores)
    python benchmarks/gmm.py --dx 8 80 --problems 10 --samples 500 --steps 20 --samplers ddrm dps rdmd
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from zsir import gmm
from zsir.samplers import SAMPLERS, DiffusionSampler

FIXED_STEPS = {"cm4ir": None}  # samplers whose schedule is tuned for their own default number of steps
ETA = {20: 0.6, 100: 0.85}  # the authors' (n_steps, eta) configurations
DPS_ZETA = 0.2  # the authors' 0.1 * grad ||r||^2 / ||r|| = 0.2 * grad ||r||


def protocol_params(name: str, problem: gmm.GMMProblem, steps: int) -> dict:
    """The authors' per-method settings for ``steps`` (module docstring); ``{}`` keeps the sampler's defaults."""
    cls = SAMPLERS.get(name)
    params: dict = {}
    if issubclass(cls, DiffusionSampler):
        params["timesteps"] = problem.timesteps(steps)
    if "eta" in cls.hyperparameters and steps in ETA:
        params["eta"] = ETA[steps]
    if name == "dps":
        params["zeta"] = DPS_ZETA
    return params


def run_sampler(name: str, problem: gmm.GMMProblem, steps: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples of sampler ``name`` for one problem (model units, shape ``(n, d_x, 1, 1)``)."""
    cls = SAMPLERS.get(name)
    sampler = cls(
        problem.prior, steps=FIXED_STEPS.get(name, steps), progress=False, **protocol_params(name, problem, steps)
    )
    y = problem.y.expand(n, *problem.y.shape[1:])
    sigma = torch.full((n, 1, 1, 1), problem.sigma_y, dtype=problem.y.dtype)
    return sampler(y, problem.operator, sigma, generator)


def _fmt(values: list[float]) -> str:
    m = sum(values) / len(values)
    if len(values) < 2:
        return f"{m:.2f}"
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m:.2f} ± {1.96 * sd / math.sqrt(len(values)):.2f}"


def benchmark(dxs, dys, problems, samples, steps_list, names, slices=100, seed=0, log=print) -> str:
    """Run the grid and return the markdown tables (one per step count)."""
    tables = []
    for steps in steps_list:
        header = [
            "d_x",
            "d_y",
            "floor",
            "prior",
            *[f"{n} ({FIXED_STEPS.get(n, steps) or SAMPLERS.get(n).default_steps})" for n in names],
        ]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for dx in dxs:
            for dy in dys:
                scores: dict[str, list[float]] = {n: [] for n in ["floor", "prior", *names]}
                for i in range(problems):
                    problem = gmm.mcgdiff_problem(dx, dy, seed=seed + i)
                    g = torch.Generator().manual_seed(seed + i)
                    ref = problem.posterior.sample(samples, g)
                    scores["floor"].append(gmm.noise_floor(problem.posterior, samples, slices, g))
                    g_prior = torch.Generator().manual_seed(10**6 + seed + i)  # leaves g's stream to the samplers
                    scores["prior"].append(
                        gmm.sliced_wasserstein(problem.prior.sample(samples, g_prior), ref, slices, g_prior)
                    )
                    for name in names:
                        out = run_sampler(name, problem, steps, samples, g)
                        scores[name].append(gmm.sliced_wasserstein(out, ref, slices, g))
                row = [str(dx), str(dy), *[_fmt(scores[k]) for k in ["floor", "prior", *names]]]
                lines.append("| " + " | ".join(row) + " |")
                log(lines[-1])
        tables.append(
            f"**{steps} steps** (mean sliced Wasserstein ± 1.96 s/sqrt({problems}); {samples} samples; "
            f"column header: sampler (steps))\n\n" + "\n".join(lines)
        )
    return "\n\n".join(tables)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dx", type=int, nargs="+", default=[8, 80, 800])
    ap.add_argument("--dy", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 100])
    ap.add_argument(
        "--samplers",
        nargs="*",
        default=None,
        help="default: every registered sampler; none: only the floor and the prior columns",
    )
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: d_x 8, 5 problems, 200 samples")
    ap.add_argument("--out", default=None, help="write the markdown tables to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.dx, args.problems, args.samples = [8], 5, 200
    if args.threads:
        torch.set_num_threads(args.threads)
    names = sorted(SAMPLERS.names()) if args.samplers is None else args.samplers
    t0 = time.perf_counter()
    text = benchmark(args.dx, args.dy, args.problems, args.samples, args.steps, names, args.slices, args.seed)
    cmd = "python benchmarks/gmm.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    text += f"\n\nCommand: `{cmd.strip()}` ({time.perf_counter() - t0:.0f} s)\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
