"""RDMD's options against PnP with the same prior on a few validation crops (the diagnosis of
docs/samplers/rdmd.md, "RDMD with a denoiser prior").

Each positional argument is one row: a sampler name and its hyperparameters as ``KEY=VALUE`` (JSON values, else
strings), or ``wiener`` / ``noisy`` for the baselines. Images: ``--limit`` files of ``--dataset`` after skipping
``--skip`` (sorted names), ``--size`` centre crops; image ``i`` gets the task's operator with seed ``i`` and the
noise ``sigma_y n`` with generator seed ``100 + i``; samplers run with seed 0. Prints the mean PSNR (dB) per row
and the per-image values.

Example (the rows of BENCHMARKS.md)::

    OMP_NUM_THREADS=1 python benchmarks/rdmd_variants.py --prior ffdnet --task deblur-motion \\
        pnp rdmd "rdmd preset=denoiser"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import zsir
from zsir import metrics as zmetrics
from zsir.io import centre_crop, read_image
from zsir.tasks import parse_task

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cbsd68"


def row(spec: str) -> tuple[str, dict]:
    name, *pairs = spec.split()
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE in {spec!r}, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return name, params


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rows", nargs="+", type=row, help="'SAMPLER [KEY=VALUE ...]', 'wiener' or 'noisy'")
    p.add_argument("--prior", default="builtin")
    p.add_argument("--task", default="deblur-motion")
    p.add_argument("--sigma-y", type=float, default=0.05, help="[0, 1] image units")
    p.add_argument("--dataset", default=str(DATA))
    p.add_argument("--skip", type=int, default=9, help="files skipped (cbsd68: the first 9 are zsir tune's)")
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    prior = zsir.load_prior(args.prior)
    files = sorted(Path(args.dataset).iterdir())[args.skip : args.skip + args.limit]
    data = []
    for i, f in enumerate(files):
        x = centre_crop(read_image(f, channels=3), args.size)
        op = parse_task(args.task).operator(tuple(x.shape[-2:]), seed=i)
        y = op.A(x)
        y = y + args.sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(100 + i))
        data.append((x, op, y))
    print(f"{args.prior} {args.task} sigma_y {args.sigma_y:g}: {', '.join(f.name for f in files)}")
    for name, params in args.rows:
        kw = {k: zsir.load_prior(v) if k == "deterministic_prior" else v for k, v in params.items()}
        psnr, nfe, t = [], 0, time.perf_counter()
        for x, op, y in data:
            if name == "wiener":  # Tikhonov around the grey mean, as benchmarks/restoration.py
                out = 0.5 + op.pinv(y - op.A(0.5 * torch.ones_like(x)), eta=args.sigma_y**2 / 0.05)
            elif name == "noisy":
                out = y
            else:
                res = zsir.solve(
                    y, op, sampler=name, prior=prior, sigma_y=args.sigma_y or None, generator=0, progress=False,
                    return_result=True, **kw,
                )  # fmt: skip
                out, nfe = res.x, res.nfe
            psnr.append(float(zmetrics.psnr(out.clamp(0, 1), x).mean()))
        label = " ".join([name] + [f"{k}={v}" for k, v in params.items()])
        per = " ".join(f"{v:.2f}" for v in psnr)
        print(f"{label:70s} PSNR {np.mean(psnr):6.2f} [{per}] NFE {nfe} {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
