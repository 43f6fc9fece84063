"""The shared informative start, measured per task: every sampler with the old start against the new one.

"before" is the start zsir used until this change: the Tikhonov pseudo-inverse ``A^T (A A^T + sigma_y^2 I)^-1 y``
(model units) for every operator, inpainting holes left at mid-grey. "after" is
:func:`zsir.samplers.steps.informative_start`: bicubic for SR, the Wiener-regularised inverse for blurs,
interpolated holes. Images: centre crops of the first ``--limit`` images of ``--dataset``; noise and random operators
seeded per image. PSNR in dB on [0, 1] outputs.

Example::

    python benchmarks/start.py --dataset ../shared/data/cbsd68 --limit 3 --size 64 --priors builtin ffdnet
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import zsir
from zsir import metrics
from zsir.io import read_image
from zsir.samplers import pnp, rdmd, steps
from zsir.tasks import parse_task

TASKS = {"sr4": 0.05, "deblur-gauss": 0.05, "inpaint-random": 0.0}


def _before(y, operator, sigma_y=0.0, fill="interp"):
    return operator.pinv(y, sigma_y**2)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--priors", nargs="+", default=["builtin"])
    p.add_argument("--samplers", nargs="+", default=["ddrm", "ddnm+", "diffpir", "pnp", "rdmd"])
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    imgs = []
    for f in sorted(args.dataset.iterdir())[: args.limit]:
        x = read_image(f, channels=3)
        H, W = x.shape[-2:]
        s = args.size
        imgs.append(x[..., (H - s) // 2 : (H - s) // 2 + s, (W - s) // 2 : (W - s) // 2 + s])
    print("| prior | task | sigma_y | sampler | before | after |\n|---|---|---|---|---|---|")
    for prior_name in args.priors:
        prior = zsir.load_prior(prior_name)
        for task_name in args.tasks:
            task, sigma_y = parse_task(task_name), TASKS[task_name]
            for sampler in args.samplers:
                scores = {"before": [], "after": []}
                for i, x in enumerate(imgs):
                    op = task.operator(tuple(x.shape[-2:]), seed=i)
                    y = op.A(x)
                    y = y + sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(i))
                    for label in scores:
                        modules = (steps, pnp, rdmd) if label == "before" else ()
                        patches = [mock.patch.object(m, "informative_start", _before) for m in modules]
                        for m in patches:
                            m.start()
                        try:
                            kw = {"sigma_y": sigma_y or None, "generator": 0, "progress": False}
                            out = zsir.solve(y, op, sampler=sampler, prior=prior, **kw)
                        finally:
                            for m in patches:
                                m.stop()
                        scores[label].append(float(metrics.psnr(out, x).mean()))
                b, a = np.mean(scores["before"]), np.mean(scores["after"])
                print(f"| {prior_name} | {task_name} | {sigma_y:g} | {sampler} | {b:.2f} | {a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
